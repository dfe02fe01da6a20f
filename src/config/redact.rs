//! Secrets stay out of logs and errors.

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`; anything else unchanged.
pub(crate) fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_owned();
    };
    let rest = &uri[scheme_end + 3..];
    // The userinfo ends at the last '@' before the path/query starts.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return uri.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        None => return uri.to_owned(),
    };
    format!("{}{user}:***{}", &uri[..scheme_end + 3], &rest[at..])
}

/// The password of `uri` as written and percent-decoded (a driver message may show either).
pub(crate) fn uri_password(uri: &str) -> Vec<String> {
    let Some(scheme_end) = uri.find("://") else {
        return Vec::new();
    };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Vec::new();
    };
    let Some((_, password)) = rest[..at].split_once(':') else {
        return Vec::new();
    };
    if password.is_empty() {
        return Vec::new();
    }
    let mut forms = vec![password.to_owned(), percent_decode(password)];
    forms.dedup();
    forms
}

/// `text` with every occurrence of each secret replaced by `***`: the last line of defence
/// for messages that quote what a library said.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact_uri, scrub, uri_password};

    #[test]
    fn passwords_are_found_in_both_forms_and_scrubbed() {
        let secrets = uri_password("mongodb://app:p%40ss-w0rd@h1/?replicaSet=rs0");
        assert_eq!(
            secrets,
            vec!["p%40ss-w0rd".to_owned(), "p@ss-w0rd".to_owned()]
        );
        assert_eq!(
            scrub("auth as app with p@ss-w0rd failed", &secrets),
            "auth as app with *** failed"
        );
        assert!(uri_password("mongodb://h1/?replicaSet=rs0").is_empty());
    }

    #[test]
    fn password_is_masked_and_the_rest_kept() {
        assert_eq!(
            redact_uri("mongodb://app:p%40ss@h1:27017,h2/?replicaSet=rs0"),
            "mongodb://app:***@h1:27017,h2/?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri("mongodb+srv://u:x@cluster.example/db"),
            "mongodb+srv://u:***@cluster.example/db"
        );
    }

    #[test]
    fn uris_without_password_are_unchanged() {
        for uri in [
            "mongodb://127.0.0.1:27017/?replicaSet=rs0",
            "mongodb://user@host/?authMechanism=MONGODB-X509",
            "not a uri",
            "mongodb://host/?note=a@b",
        ] {
            assert_eq!(redact_uri(uri), uri);
        }
    }
}
