//! Shared-secret tokens: where they come from (a file or the environment, never a command line),
//! what a valid one looks like, and comparing a presented token in constant time.
//!
//! Must not log or print a token; `Debug` is redacted.

use std::path::Path;

use subtle::ConstantTimeEq;

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_LEN: usize = 16;

/// The tokens this agent accepts. The first is the one it sends when it forwards a call; more
/// lines in the token file allow rotating the token without a moment where members disagree.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

fn check(key: &str, token: &str) -> Result<(), String> {
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{key}: a token must be printable ASCII without spaces (it travels in an HTTP header); \
             generate one with: head -c 32 /dev/urandom | base64"
        ));
    }
    if token.len() < MIN_LEN {
        return Err(format!(
            "{key}: the token is {} characters, use at least {MIN_LEN}; generate one with: head -c 32 \
             /dev/urandom | base64",
            token.len()
        ));
    }
    Ok(())
}

impl Tokens {
    /// One token given directly (configuration file or environment); `key` names it in errors.
    pub fn single(key: &str, token: &str) -> Result<Tokens, String> {
        let token = token.trim();
        check(key, token)?;
        Ok(Tokens(vec![token.to_string()]))
    }

    /// The tokens in `text`: one per line; blank lines and lines starting with `#` are skipped.
    pub fn parse(key: &str, text: &str) -> Result<Tokens, String> {
        let mut out = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            check(key, line)?;
            out.push(line.to_string());
        }
        if out.is_empty() {
            return Err(format!("{key}: the file holds no token; write the token on its first line"));
        }
        Ok(Tokens(out))
    }

    /// The tokens in the file at `path`, which other users must not be able to read.
    pub fn from_file(key: &str, path: &Path) -> Result<Tokens, String> {
        let bytes = pgquorum_proto::auth::read_secret(path)
            .map_err(|e| format!("{key}: {e}; point it at a file holding the token (mode 600)"))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            format!("{key}: {} is not text; write the token on its first line", path.display())
        })?;
        Tokens::parse(&format!("{key} ({})", path.display()), &text)
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token this agent sends when it forwards a call.
    pub fn own(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in constant time.
    pub fn accepts(&self, presented: &str) -> bool {
        self.0.iter().fold(false, |found, t| found | ct_eq(t.as_bytes(), presented.as_bytes()))
    }
}

/// Compares `a` and `b` in time that depends on neither their contents nor their lengths: both
/// are hashed to SHA-256 first, then the digests are compared in constant time.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    da.as_ref().ct_eq(db.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_matches_only_equal_bytes() {
        assert!(ct_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!ct_eq(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!ct_eq(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn files_hold_one_token_per_line_and_every_line_is_accepted() {
        let t = Tokens::parse(
            "auth.token_file",
            "# rotated 2026-11\nnew-token-0123456789\n\nold-token-0123456789\n",
        )
        .expect("valid");
        assert_eq!(t.own(), Some("new-token-0123456789"));
        assert!(t.accepts("old-token-0123456789") && t.accepts("new-token-0123456789"));
        assert!(!t.accepts("new-token-012345678") && !t.accepts(""));
        assert!(!format!("{t:?}").contains("token-0123"), "Debug never shows a token");
    }

    #[test]
    fn short_spaced_or_missing_tokens_are_refused_with_the_fix() {
        let err = Tokens::single("auth.token", "short").expect_err("too short");
        assert!(err.contains("auth.token: the token is 5 characters, use at least 16"), "{err}");
        assert!(err.contains("head -c 32 /dev/urandom | base64"), "{err}");
        let err = Tokens::single("auth.token", "has a space in the middle").expect_err("space");
        assert!(err.contains("printable ASCII without spaces"), "{err}");
        let err = Tokens::parse("auth.token_file", "\n# only a comment\n").expect_err("empty");
        assert!(err.contains("holds no token"), "{err}");
        let err =
            Tokens::from_file("auth.token_file", Path::new("/nonexistent/pgq-token")).expect_err("missing");
        assert!(err.contains("auth.token_file: cannot read /nonexistent/pgq-token"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "file-token-0123456789\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Tokens::from_file("auth.token_file", &f).expect_err("world-readable");
        assert!(err.contains("auth.token_file: ") && err.contains("readable by every user"), "{err}");
        assert!(err.contains(&format!("chmod 600 {}", f.display())), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            Tokens::from_file("auth.token_file", &f).expect("0600").own(),
            Some("file-token-0123456789")
        );
        std::fs::write(&f, "").expect("empty");
        let err = Tokens::from_file("auth.token_file", &f).expect_err("empty");
        assert!(err.contains("holds no token"), "{err}");
        assert_eq!(
            Tokens::single("k", "  padded-token-0123456789\n").expect("trimmed").own(),
            Some("padded-token-0123456789")
        );
    }
}
