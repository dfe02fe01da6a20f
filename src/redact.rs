//! Secrets stay out of logs and errors.

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`; anything else unchanged.
pub fn redact_uri(uri: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::redact_uri;

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
