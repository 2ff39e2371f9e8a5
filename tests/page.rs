//! The live step page (`GET /`) in a real browser: Debian's Chromium, headless, driven over the
//! DevTools protocol on a pipe. The page, given a step and credentials, shows each (status, tag)
//! group with the API's counts, and follows new events as they are applied.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};
use stepview::events::Event;

/// A headless Chromium spoken to over `--remote-debugging-pipe` (JSON messages ended by NUL on
/// file descriptors 3 and 4).
struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let pipe = || {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        let (theirs_in, ours_to) = pipe();
        let (ours_from, theirs_out) = pipe();
        let mut cmd = std::process::Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::dup2(theirs_in, 3) < 0 || libc::dup2(theirs_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("chromium not found: apt-get install chromium (ops/test.sh does)");
        unsafe {
            libc::close(theirs_in);
            libc::close(theirs_out);
        }
        let (to, from) = unsafe {
            (
                std::fs::File::from_raw_fd(ours_to),
                std::fs::File::from_raw_fd(ours_from),
            )
        };
        assert!(to.as_raw_fd() > 2 && from.as_raw_fd() > 2);
        Browser {
            child,
            to,
            from: BufReader::new(from),
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends one command and waits for its answer (events in between are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.to.write_all(message.to_string().as_bytes()).unwrap();
        self.to.write_all(b"\0").unwrap();
        loop {
            let mut raw = Vec::new();
            self.from.read_until(0, &mut raw).unwrap();
            raw.pop();
            let answer: Value = serde_json::from_slice(&raw).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab; the tab's session.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": url}));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        attached["sessionId"].as_str().unwrap().to_owned()
    }

    /// Evaluates `expression` in the tab; its value.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The groups the page shows: (status, tag, count), and its state line.
const SHOWN: &str = "JSON.stringify({state: document.getElementById('state').dataset.state || '', \
     groups: [...document.querySelectorAll('.group')].map(g => [+g.dataset.status, g.dataset.tag, +g.dataset.count])})";

/// Waits until the page shows `want` groups; what it showed last otherwise.
fn wait_shown(browser: &mut Browser, session: &str, want: &[(i64, String, i64)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the page has loaded, there is nothing to read.
        let shown: Value = browser
            .eval(session, SHOWN)
            .as_str()
            .map_or(Value::Null, |s| serde_json::from_str(s).unwrap());
        let groups: Vec<(i64, String, i64)> =
            serde_json::from_value(shown["groups"].clone()).unwrap_or_default();
        if groups == want || Instant::now() > deadline {
            assert_eq!(groups, want, "the page shows {shown}");
            return shown;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_apis_groups_and_follows_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(dir.path())).await;
    let hosts: Vec<(i64, i32, &str)> = (1..=12).map(|h| (h, 0, "10.0.0.9")).collect();
    svc.apply(&[step(800, 1, 2, 0, 1), targets(800, 0, &hosts)]);
    for h in 1..=5 {
        svc.apply(&[Event::HostResult(result(800, 0, 0, h, 9, "", 1))]);
    }
    let counts = |data: &Value| -> Vec<(i64, String, i64)> {
        groups(data)
            .into_iter()
            .map(|(s, t, n, _)| (s, t, n))
            .collect()
    };
    let before = counts(&svc.data(&q(800, "max_host_num_per_group=0")).await);
    assert_eq!(before.len(), 2);

    let url = format!(
        "{}/?bk_scope_type=biz&bk_scope_id=2&job_instance_id={JOB}&step_instance_id=800#app={APP}&secret={SECRET}",
        svc.base
    );
    let (mut browser, session) = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start();
        let session = browser.open(&url);
        (browser, session)
    })
    .await
    .unwrap();
    let shown = {
        let want = before.clone();
        let (b, s) = (&mut browser, session.clone());
        tokio::task::block_in_place(|| wait_shown(b, &s, &want))
    };
    assert_eq!(shown["state"], "live");

    // New events: the page follows, without a reload.
    svc.apply(&[
        Event::HostResult(result(800, 0, 0, 6, 104, "failed", 1)),
        Event::HostResult(result(800, 0, 0, 7, 9, "", 1)),
    ]);
    let after = counts(&svc.data(&q(800, "max_host_num_per_group=0")).await);
    assert_ne!(after, before);
    tokio::task::block_in_place(|| wait_shown(&mut browser, &session, &after));

    // In English, the credentials kept in the browser session (no longer in the address bar).
    let address = tokio::task::block_in_place(|| {
        browser.eval(
            &session,
            "document.getElementById('lang').value = 'en'; \
            document.getElementById('lang').dispatchEvent(new Event('change')); location.href",
        )
    });
    assert!(!address.as_str().unwrap().contains("secret"), "{address}");
    let label = tokio::task::block_in_place(|| {
        std::thread::sleep(Duration::from_millis(500));
        browser.eval(
            &session,
            "document.querySelector('[data-i18n=watch]').textContent",
        )
    });
    assert_eq!(label, "Watch");
    tokio::task::block_in_place(|| wait_shown(&mut browser, &session, &after));
    // A finished step: the page says so.
    svc.apply(&[step(800, 1, 3, 0, 2)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::task::block_in_place(|| {
        browser.eval(&session, "document.getElementById('state').dataset.state")
    }) != "finished"
    {
        assert!(
            Instant::now() < deadline,
            "the page never said the step finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
