//! The Debian mirror this machine already uses: the first `deb` source for the wanted suite
//! in its apt configuration (`/etc/apt/sources.list` one-line entries and
//! `/etc/apt/sources.list.d/*.list` / `*.sources` deb822 stanzas), so the test image is
//! built from the same place the machine's own packages come from and no host is
//! hard-coded.

use std::path::{Path, PathBuf};

/// The first mirror URI serving `suite` (exactly, e.g. `bookworm`, not
/// `bookworm-security`) among the apt source files under `etc_apt`. Returns the files it
/// read when none does, for the error message.
pub fn find(etc_apt: &Path, suite: &str) -> Result<String, Vec<PathBuf>> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(dir) = std::fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut read = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        read.push(f.clone());
        let found = if f.extension().is_some_and(|e| e == "sources") {
            from_deb822(&text, suite)
        } else {
            from_one_line(&text, suite)
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    Err(read)
}

fn usable(uri: &str) -> bool {
    uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:/")
}

/// `deb [options] URI SUITE COMPONENT…` lines.
pub fn from_one_line(text: &str, suite: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            // Options run to the word that ends with `]`.
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        if let [uri, s, ..] = rest.as_slice() {
            if *s == suite && usable(uri) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// deb822 stanzas: `Types:`, `URIs:`, `Suites:`, `Enabled:`; stanzas split by blank lines.
pub fn from_deb822(text: &str, suite: &str) -> Option<String> {
    let mut stanzas: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if !line.trim_start().starts_with('#') {
            if let Some(s) = stanzas.last_mut() {
                s.push(line);
            }
        }
    }
    for stanza in stanzas {
        let field = |name: &str| -> Vec<&str> {
            stanza
                .iter()
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.split_whitespace().collect::<Vec<_>>())
                })
                .next()
                .unwrap_or_default()
        };
        if field("Enabled").first().is_some_and(|v| *v == "no") {
            continue;
        }
        if !field("Types").contains(&"deb") || !field("Suites").contains(&suite) {
            continue;
        }
        if let Some(uri) = field("URIs").into_iter().find(|u| usable(u)) {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_the_suite_not_its_security_sibling() {
        let text = "Types: deb\n# comment\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
                    Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            from_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(from_deb822(text, "trixie"), None);
        let off = "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\n";
        assert_eq!(from_deb822(off, "bookworm"), None);
    }

    #[test]
    fn one_line_entries_with_options_and_comments() {
        let text = "# deb http://old/debian bookworm main\n\
                    deb-src http://src/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            from_one_line(text, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            from_one_line("deb cdrom:[x]/ bookworm main\n", "bookworm"),
            None
        );
    }

    #[test]
    fn find_reads_the_folder_and_names_what_it_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sources.list.d")).expect("mkdir");
        let err = find(dir.path(), "bookworm").expect_err("nothing configured");
        assert!(err.is_empty());
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\n",
        )
        .expect("write");
        assert_eq!(
            find(dir.path(), "bookworm").as_deref(),
            Ok("http://deb.example/debian")
        );
    }
}
