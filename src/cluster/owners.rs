//! Who owns what: a partition's owner by rendezvous hashing over the live members' URLs.

/// The owner of `partition` among `members` (URLs): the highest rendezvous hash. Every instance
/// computes the same from the same members; a member joining or leaving moves only its share.
pub fn owner<'a>(partition: i32, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|url| (weight(partition, url), *url))
}

/// FNV-1a over the URL and the partition, then a 64-bit finalizer (splitmix64): stable across
/// versions and machines, unlike the standard library's hasher.
fn weight(partition: i32, url: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes().chain(partition.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_joining_moves_only_its_share() {
        let three = ["http://a:1", "http://b:1", "http://c:1"];
        let four = ["http://a:1", "http://b:1", "http://c:1", "http://d:1"];
        let (mut moved, mut to_d) = (0, 0);
        for p in 0..64 {
            let before = owner(p, three).unwrap();
            let after = owner(p, four).unwrap();
            if before != after {
                moved += 1;
                to_d += usize::from(after == "http://d:1");
            }
        }
        assert_eq!(
            moved, to_d,
            "only partitions that go to the new member move"
        );
        assert!((8..=24).contains(&moved), "about a quarter moves: {moved}");
        assert_eq!(owner(3, Vec::<&str>::new()), None);
    }
}
