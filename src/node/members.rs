//! Member lists: `--peers a,b,c` and Nacos `cluster.conf` (one `ip[:port]` per line, `#`
//! comments, commas allowed, default port 8848).

use crate::error::{Error, Result};
use crate::raft::PeerAddr;

pub const DEFAULT_PORT: u16 = 8848;

/// Parses a member list in either form; duplicates are an error, order is kept.
pub fn parse_members(text: &str) -> Result<Vec<PeerAddr>> {
    let mut out: Vec<PeerAddr> = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line
            .split([',', ' ', '\t'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let addr = normalize(item).map_err(|why| {
                Error::Config(format!("member list line {}: {item:?}: {why}", lineno + 1))
            })?;
            if out.contains(&addr) {
                return Err(Error::Config(format!("member {addr} is listed twice")));
            }
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(Error::Config("the member list is empty".into()));
    }
    Ok(out)
}

/// `host` → `host:8848`; checks the port.
pub fn normalize(item: &str) -> std::result::Result<PeerAddr, String> {
    let (host, port) = match item.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => (item, DEFAULT_PORT),
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if port == 0 {
        return Err("port 0 cannot be a member's address".into());
    }
    Ok(PeerAddr::new(format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_conf_format() {
        let text = "# members\n10.0.0.1:8848\n10.0.0.2:8849, 10.0.0.3 # third\n\n";
        let m = parse_members(text).unwrap();
        let got: Vec<&str> = m.iter().map(|p| p.as_str()).collect();
        assert_eq!(got, vec!["10.0.0.1:8848", "10.0.0.2:8849", "10.0.0.3:8848"]);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse_members("").unwrap_err().to_string().contains("empty"));
        assert!(parse_members("a:1,a:1")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let e = parse_members("ok:1\nbad:port").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("bad port"), "{e}");
    }
}
