//! Wait for a `protoforge serve` started on port 0 to say which ports it got.
//! Tests bind nothing themselves: a port "found free" can be taken by another
//! test before the server binds it, and then someone else answers in its place.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The sites' port and the webhook's (0 when `webhook` is false), read from the
/// server's log at `log`; "serving prototypes" is logged once the branch is
/// read and the port open. Panics, with the log, if the server exits first or
/// takes longer than 30 s.
pub fn ports(child: &mut Child, log: &Path, webhook: bool) -> (u16, u16) {
    let pattern = |what: &str| {
        regex::Regex::new(&format!(r"{what} addr=Some\(127\.0\.0\.1:(\d+)\)"))
            .expect("a valid pattern")
    };
    let (site_re, hook_re) = (pattern("serving prototypes"), pattern("webhook listening"));
    let port_of = |re: &regex::Regex, text: &str| {
        re.captures(text).map(|c| c[1].parse::<u16>().expect("a port number"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let site = port_of(&site_re, &text);
        let hook = if webhook { port_of(&hook_re, &text) } else { Some(0) };
        if let (Some(site), Some(hook)) = (site, hook) {
            return (site, hook);
        }
        if let Some(status) = child.try_wait().expect("the server's status") {
            panic!("the server exited ({status}) before it listened:\n{text}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not listen within 30 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
