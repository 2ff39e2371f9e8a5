//! Content codings (`Accept-Encoding`) and bodies made of ready parts.
//!
//! A status answer kept in the answer cache is written as three parts: a small head made per
//! request (the envelope with its request id, the step), the groups rendered once, and the
//! closing braces. The groups are shared, never copied into a body ([`Parts`] is an exact-length
//! body of shared bytes). They are also compressed once per coding, the first time a client
//! asks for it ([`Kept`]). For gzip, as a deflate segment that ends on a byte boundary and is
//! not final: a gzip body is then the per-request head compressed, the kept segment, the tail
//! compressed as the final block, and a CRC combined from the parts' CRCs (one standard gzip
//! member). For zstd, as a frame: a zstd body is three frames, which a zstd stream may be
//! (RFC 8878). Nothing is compressed twice.
//!
//! Owns: negotiation (zstd or gzip when the client asked for it with a non-zero weight, else
//! nothing: never compressed for a client that did not ask) and the framing. Must not: decide
//! what an answer says.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use flate2::{Compress, Compression, FlushCompress, Status};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

/// How a body is coded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Zstd,
}

/// Bodies smaller than this are sent as they are: a compressed frame costs more than it saves.
const COMPRESS_FROM: usize = 1024;

/// gzip level 1: an uncapped answer compresses ~7× at it, several times faster than the default.
fn level() -> Compression {
    Compression::fast()
}

/// zstd level 1, for the same reason.
const ZSTD_LEVEL: i32 = 1;

fn zstd_frame(input: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(input, ZSTD_LEVEL).expect("compressing memory cannot fail")
}

impl Coding {
    /// What the client's `Accept-Encoding` allows: zstd when named with a weight at least
    /// gzip's, else gzip (or `*`), with a non-zero weight; else nothing.
    pub fn negotiate(headers: &HeaderMap) -> Coding {
        let mut gzip = None;
        let mut zstd = None;
        let mut any = None;
        for value in headers.get_all("accept-encoding") {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut fields = item.split(';');
                let name = fields.next().unwrap_or("").trim();
                let weight = fields
                    .filter_map(|f| f.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                    gzip = Some(weight);
                } else if name.eq_ignore_ascii_case("zstd") {
                    zstd = Some(weight);
                } else if name == "*" {
                    any = Some(weight);
                }
            }
        }
        let gzip = gzip.or(any).unwrap_or(0.0);
        match zstd.unwrap_or(0.0) {
            z if z > 0.0 && z >= gzip => Coding::Zstd,
            _ if gzip > 0.0 => Coding::Gzip,
            _ => Coding::Identity,
        }
    }

    /// The `Content-Encoding` of a body coded so, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Zstd => Some("zstd"),
        }
    }
}

/// The compressed forms of kept bytes (an answer's groups), each made once, the first time a
/// client asks for that coding.
#[derive(Default)]
pub struct Kept {
    gzip: OnceLock<Deflated>,
    zstd: OnceLock<Bytes>,
}

impl Kept {
    /// Whether a body coded as `coding` is made without compressing `middle` now.
    pub fn ready(&self, coding: Coding) -> bool {
        match coding {
            Coding::Identity => true,
            Coding::Gzip => self.gzip.get().is_some(),
            Coding::Zstd => self.zstd.get().is_some(),
        }
    }

    fn gzip(&self, middle: &[u8]) -> &Deflated {
        self.gzip.get_or_init(|| Deflated::of(middle))
    }

    fn zstd(&self, middle: &[u8]) -> &Bytes {
        self.zstd.get_or_init(|| zstd_frame(middle).into())
    }

    /// Compresses `middle` for `coding` unless done already.
    pub fn prepare(&self, coding: Coding, middle: &[u8]) {
        match coding {
            Coding::Identity => {}
            Coding::Gzip => drop(self.gzip(middle)),
            Coding::Zstd => drop(self.zstd(middle)),
        }
    }

    /// `head`, then `middle` (whose compressed forms these are), then `tail`, coded as `coding`.
    pub fn body(
        &self,
        head: Vec<u8>,
        middle: &Bytes,
        tail: &'static [u8],
        coding: Coding,
    ) -> Parts {
        match coding {
            Coding::Identity => {
                let mut parts = Parts::from(Bytes::from(head));
                parts.push(middle.clone());
                parts.push(Bytes::from_static(tail));
                parts
            }
            Coding::Gzip => gzip(&head, Some(self.gzip(middle)), tail),
            Coding::Zstd => {
                let mut parts = Parts::from(Bytes::from(zstd_frame(&head)));
                parts.push(self.zstd(middle).clone());
                parts.push(zstd_frame(tail).into());
                parts
            }
        }
    }
}

/// Bytes compressed as raw deflate blocks that end on a byte boundary with no final block (a
/// sync flush), so that more deflate data may follow them; with the CRC-32 and length of what
/// they hold.
struct Deflated {
    bytes: Bytes,
    crc: crc32fast::Hasher,
    /// Bytes before compression.
    holds: u64,
}

impl Deflated {
    fn of(input: &[u8]) -> Deflated {
        Deflated {
            bytes: deflate(input, FlushCompress::Sync).into(),
            crc: crc_of(input),
            holds: input.len() as u64,
        }
    }
}

fn crc_of(input: &[u8]) -> crc32fast::Hasher {
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    crc
}

/// `input` as raw deflate, ended by `flush` (`Sync`: more may follow; `Finish`: the last block).
fn deflate(input: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut compress = Compress::new(level(), false);
    let mut out = Vec::with_capacity(input.len() / 8 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let read = compress.total_in() as usize;
        let status = compress
            .compress_vec(&input[read..], &mut out, flush)
            .expect("deflating memory cannot fail");
        let all_read = compress.total_in() as usize == input.len();
        match (flush, status) {
            (FlushCompress::Finish, Status::StreamEnd) => return out,
            // A sync flush is complete once everything is read and the output had room left.
            (FlushCompress::Sync, _) if all_read && out.len() < out.capacity() => return out,
            _ => {}
        }
    }
}

/// A gzip member (RFC 1952) holding `head`, then what `middle` holds, then `tail`.
fn gzip(head: &[u8], middle: Option<&Deflated>, tail: &[u8]) -> Parts {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut crc = crc_of(head);
    let mut parts = Parts::default();
    parts.push(Bytes::from_static(&HEADER));
    parts.push(deflate(head, FlushCompress::Sync).into());
    if let Some(middle) = middle {
        crc.combine(&middle.crc);
        parts.push(middle.bytes.clone());
    }
    crc.combine(&crc_of(tail));
    let mut end = deflate(tail, FlushCompress::Finish);
    let length = (head.len() + tail.len()) as u64 + middle.map_or(0, |m| m.holds);
    end.extend_from_slice(&crc.finalize().to_le_bytes());
    end.extend_from_slice(&(length as u32).to_le_bytes());
    parts.push(end.into());
    parts
}

/// `body` coded as `coding` asks (small bodies stay as they are); the coding used.
pub fn encode(body: Vec<u8>, coding: Coding) -> (Vec<u8>, Coding) {
    match coding {
        _ if body.len() < COMPRESS_FROM => (body, Coding::Identity),
        Coding::Identity => (body, Coding::Identity),
        Coding::Gzip => (gzip(&[], None, &body).concat(), Coding::Gzip),
        Coding::Zstd => (zstd_frame(&body), Coding::Zstd),
    }
}

/// A body of ready byte chunks with its exact length (so it goes out with `Content-Length`),
/// written without copying them.
#[derive(Default)]
pub struct Parts {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Parts {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len() as u64;
            self.chunks.push_back(chunk);
        }
    }

    /// The chunks as one buffer (an event of a stream).
    pub fn concat(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.remaining as usize);
        for chunk in self.chunks {
            out.extend_from_slice(&chunk);
        }
        out
    }

    pub fn into_body(self) -> Body {
        Body::new(self)
    }
}

impl From<Bytes> for Parts {
    fn from(bytes: Bytes) -> Parts {
        let mut parts = Parts::default();
        parts.push(bytes);
        parts
    }
}

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front().map(|chunk| {
            self.remaining -= chunk.len() as u64;
            Ok(http_body::Frame::data(chunk))
        });
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(body: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("a valid gzip member");
        out
    }

    #[test]
    fn a_coded_body_of_parts_decodes_to_them_in_order() {
        let middle: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"bk_host_id\":{i},\"status\":9}},").into_bytes())
            .collect();
        let kept = Deflated::of(&middle);
        assert!(kept.bytes.len() * 5 < middle.len(), "it compresses");
        let body = gzip(b"{\"head\":[", Some(&kept), b"]}").concat();
        let mut want = b"{\"head\":[".to_vec();
        want.extend_from_slice(&middle);
        want.extend_from_slice(b"]}");
        assert_eq!(gunzip(body), want);
        // The same kept segment serves another head.
        assert_eq!(
            gunzip(gzip(b"other", Some(&kept), b"").concat()),
            [&b"other"[..], &middle].concat()
        );
        assert_eq!(gunzip(gzip(b"", None, b"only").concat()), b"only");

        // zstd: three frames, one stream.
        let kept = Kept::default();
        let middle = Bytes::from(middle);
        let body = kept.body(b"{\"head\":[".to_vec(), &middle, b"]}", Coding::Zstd);
        assert!(kept.ready(Coding::Zstd) && !kept.ready(Coding::Gzip));
        let body = body.concat();
        assert!(body.len() * 5 < want.len(), "it compresses");
        assert_eq!(zstd::stream::decode_all(&body[..]).unwrap(), want);
        let body = kept.body(b"{\"head\":[".to_vec(), &middle, b"]}", Coding::Gzip);
        assert_eq!(gunzip(body.concat()), want);
    }

    #[test]
    fn a_coding_only_when_asked_with_a_weight() {
        let asked = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert("accept-encoding", value.parse().unwrap());
            Coding::negotiate(&h)
        };
        assert_eq!(Coding::negotiate(&HeaderMap::new()), Coding::Identity);
        assert_eq!(asked("gzip, deflate"), Coding::Gzip);
        assert_eq!(asked("br;q=1.0, GZIP;q=0.5"), Coding::Gzip);
        assert_eq!(asked("*"), Coding::Gzip);
        assert_eq!(asked("gzip;q=0, *"), Coding::Identity);
        assert_eq!(asked("identity"), Coding::Identity);
        assert_eq!(asked("zstd, br"), Coding::Zstd);
        assert_eq!(asked("gzip, deflate, zstd"), Coding::Zstd);
        assert_eq!(asked("gzip, zstd;q=0.5"), Coding::Gzip);
        assert_eq!(asked("zstd;q=0"), Coding::Identity);
        assert_eq!(asked("br"), Coding::Identity);
    }
}
