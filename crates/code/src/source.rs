//! What `--code` names, parsed and checked on the host before any sandbox exists.

use std::path::PathBuf;

use stockade_core::{Error, Result};

/// A code source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// Nothing: an empty git repository with an empty baseline commit.
    Empty,
    /// A local directory, copied (its `.git` kept when it has one).
    Dir(PathBuf),
    /// A git repository: `url` as git takes it, at `reference` (branch, tag or commit) or the
    /// remote's default branch.
    Git { url: String, reference: Option<String> },
}

const FIELD: &str = "code";

/// Whether a git remote names a path on this host (`file://`, or a bare path) rather than a
/// server.
pub fn is_host_path_remote(url: &str) -> bool {
    url.starts_with("file://") || url.starts_with('/') || url.starts_with('.') || url.starts_with('~')
}

impl CodeSource {
    /// Whether loading this source reads the host's own files (a directory, a `file://` repo).
    pub fn reads_host_paths(&self) -> bool {
        match self {
            CodeSource::Empty => false,
            CodeSource::Dir(_) => true,
            CodeSource::Git { url, .. } => is_host_path_remote(url),
        }
    }

    /// Parses `empty`, `github:owner/repo[@ref]`, a git URL (`https://`, `http://`, `ssh://`,
    /// `git://`, `file://`, or scp-like `user@host:path`) with an optional `@ref`, or a directory.
    pub fn parse(s: &str) -> Result<CodeSource> {
        let parsed = Self::parse_unchecked(s)?;
        if let CodeSource::Git { url, reference } = &parsed {
            // Nothing git could take for an option, and refs from git's own safe alphabet.
            if url.starts_with('-') {
                return Err(Error::invalid(
                    FIELD,
                    format!("{s:?}: a URL cannot start with '-'"),
                ));
            }
            if let Some(r) = reference {
                let ok = !r.starts_with('-')
                    && !r.contains("..")
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._/-+".contains(&b));
                if !ok {
                    return Err(Error::invalid(
                        FIELD,
                        format!("{s:?}: the ref {r:?} must be a branch, tag or commit (letters, digits, '._/-+', not starting with '-')"),
                    ));
                }
            }
        }
        Ok(parsed)
    }

    fn parse_unchecked(s: &str) -> Result<CodeSource> {
        if s.is_empty() {
            return Err(Error::invalid(
                FIELD,
                "empty; expected empty, github:owner/repo[@ref], a git URL or a directory",
            ));
        }
        if s == "empty" {
            return Ok(CodeSource::Empty);
        }
        if let Some(rest) = s.strip_prefix("github:") {
            let (repo, reference) = match rest.split_once('@') {
                Some((r, reference)) => (r, Some(reference)),
                None => (rest, None),
            };
            let parts: Vec<&str> = repo.split('/').collect();
            let valid = |p: &str| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            if parts.len() != 2 || !parts.iter().all(|p| valid(p)) {
                return Err(Error::invalid(
                    FIELD,
                    format!("{s:?}: expected github:OWNER/REPO[@REF]"),
                ));
            }
            if reference == Some("") {
                return Err(Error::invalid(FIELD, format!("{s:?}: empty ref after '@'")));
            }
            return Ok(CodeSource::Git {
                url: format!("https://github.com/{repo}.git"),
                reference: reference.map(String::from),
            });
        }
        if let Some(path_start) = url_path_start(s) {
            // A ref is an '@' inside the path part (an '@' before it is a user name).
            return Ok(match s.rfind('@').filter(|&at| at > path_start) {
                Some(at) if at + 1 == s.len() => {
                    return Err(Error::invalid(FIELD, format!("{s:?}: empty ref after '@'")))
                }
                Some(at) => CodeSource::Git {
                    url: s[..at].to_owned(),
                    reference: Some(s[at + 1..].to_owned()),
                },
                None => CodeSource::Git {
                    url: s.to_owned(),
                    reference: None,
                },
            });
        }
        let path = std::path::Path::new(s);
        match std::fs::canonicalize(path) {
            Ok(p) if p.is_dir() => Ok(CodeSource::Dir(p)),
            Ok(p) => Err(Error::invalid(FIELD, format!("{}: not a directory", p.display()))),
            Err(e) => Err(Error::invalid(
                FIELD,
                format!("{s}: {e} (expected empty, github:owner/repo[@ref], a git URL or a directory)"),
            )),
        }
    }

    /// How the source is shown in results and errors: URLs without any user or password.
    pub fn describe(&self) -> String {
        match self {
            CodeSource::Empty => "empty".into(),
            CodeSource::Dir(p) => p.display().to_string(),
            CodeSource::Git {
                url,
                reference: Some(r),
            } => format!("{}@{r}", without_credentials(url)),
            CodeSource::Git { url, reference: None } => without_credentials(url),
        }
    }
}

/// `scheme://user:secret@host/path` → `scheme://host/path`; other forms unchanged.
pub fn without_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_owned()
}

/// Where the path of a git URL starts, or `None` when `s` is not a URL.
fn url_path_start(s: &str) -> Option<usize> {
    for scheme in ["https://", "http://", "ssh://", "git://", "file://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            return Some(scheme.len() + rest.find('/').unwrap_or(rest.len()));
        }
    }
    // scp-like: user@host:path (no slash before the colon).
    let colon = s.find(':')?;
    let before = &s[..colon];
    (before.contains('@') && !before.contains('/')).then_some(colon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(url: &str, reference: Option<&str>) -> CodeSource {
        CodeSource::Git {
            url: url.into(),
            reference: reference.map(String::from),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(CodeSource::parse("empty").unwrap(), CodeSource::Empty);
        assert_eq!(
            CodeSource::parse("github:owner/repo@abc123").unwrap(),
            git("https://github.com/owner/repo.git", Some("abc123"))
        );
        assert_eq!(
            CodeSource::parse("github:o/r").unwrap(),
            git("https://github.com/o/r.git", None)
        );
        assert_eq!(
            CodeSource::parse("https://user@example.com/x/y.git@feature/z").unwrap(),
            git("https://user@example.com/x/y.git", Some("feature/z"))
        );
        assert_eq!(
            CodeSource::parse("git@github.com:o/r.git").unwrap(),
            git("git@github.com:o/r.git", None)
        );
        assert_eq!(
            CodeSource::parse("git@github.com:o/r.git@v1").unwrap(),
            git("git@github.com:o/r.git", Some("v1"))
        );
        assert_eq!(
            CodeSource::parse("file:///srv/repo.git@main").unwrap(),
            git("file:///srv/repo.git", Some("main"))
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            CodeSource::parse(dir.path().to_str().unwrap()).unwrap(),
            CodeSource::Dir(dir.path().canonicalize().unwrap())
        );
    }

    #[test]
    fn credentials_never_show() {
        let s = CodeSource::parse("https://x-access-token:ghp_secret@github.com/o/r.git@main").unwrap();
        assert_eq!(s.describe(), "https://github.com/o/r.git@main");
        assert_eq!(
            without_credentials("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }

    #[test]
    fn bad_sources_name_the_field() {
        for bad in [
            "",
            "github:onlyowner",
            "github:a/b@",
            "/no/such/dir",
            "https://h/r.git@",
            "file:///srv/r.git@--upload-pack=touch /tmp/pwned;git-upload-pack",
            "--upload-pack=cmd@h:p@/local",
            "github:o/r@a..b",
        ] {
            let e = CodeSource::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid code: "), "{bad}: {e}");
        }
    }
}
