//! Error text for people: the MongoDB driver's `Display` carries debugging fields (error
//! labels, the server's raw reply as hex, session ids, signed cluster times) that bury
//! the one sentence that matters. They are dropped here; the server's message stays.

/// `text` without the driver's debugging fields.
pub fn tidy(text: &str) -> String {
    let mut out = text.replace("Kind: ", "");
    cut_all(&mut out, ", labels: ", |rest| {
        let response = rest.find(", server response: ")? + ", server response: ".len();
        let tail = &rest[response..];
        if tail.starts_with("None") {
            return Some(response + "None".len());
        }
        let raw = "Some(RawDocumentBuf { data: \"";
        let data = tail.strip_prefix(raw)?;
        Some(response + raw.len() + data.find("\" })")? + "\" })".len())
    });
    cut_all(&mut out, ", lsid: { id: UUID(", |rest| {
        Some(rest.find(") }")? + ") }".len())
    });
    cut_all(&mut out, ", $clusterTime: { clusterTime: ", |rest| {
        let key = rest.find("keyId: ")?;
        Some(key + rest[key..].find(" } }")? + " } }".len())
    });
    out
}

/// Shows an error through [`tidy`]: `tracing::warn!(error = %Tidy(&e), ...)`.
pub(crate) struct Tidy<'a, E: std::fmt::Display>(pub &'a E);

impl<E: std::fmt::Display> std::fmt::Display for Tidy<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&tidy(&self.0.to_string()))
    }
}

/// Removes every span that starts with `marker` and ends where `end` says (a length from
/// the marker's start); a span whose end cannot be found is kept.
fn cut_all(text: &mut String, marker: &str, end: impl Fn(&str) -> Option<usize>) {
    let mut from = 0;
    while let Some(found) = text[from..].find(marker) {
        let start = from + found;
        match end(&text[start..]) {
            Some(len) => text.replace_range(start..start + len, ""),
            None => from = start + marker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_message_stays_and_the_debugging_fields_go() {
        let raw = "preparing the handlers: memory_stats: Kind: Command failed: Error code 13 \
            (Unauthorized): not authorized on agent_memory to execute command { createIndexes: \
            \"changeflow_processed_events\", $db: \"agent_memory\", lsid: { id: \
            UUID(\"a387e84e-f20e-413b-a1b7-057ce46c11f9\") }, $clusterTime: { clusterTime: \
            Timestamp(1795329219, 13), signature: { hash: BinData(0, 1517CE99), keyId: \
            7710879903201099782 } } }, labels: {}, source: None, server response: \
            Some(RawDocumentBuf { data: \"68020000016f6b\" })";
        assert_eq!(
            tidy(raw),
            "preparing the handlers: memory_stats: Command failed: Error code 13 \
             (Unauthorized): not authorized on agent_memory to execute command { createIndexes: \
             \"changeflow_processed_events\", $db: \"agent_memory\" }"
        );
        let plain = "Kind: Server selection timeout: No available servers, labels: \
            {\"SystemOverloadedError\"}, source: None, server response: None";
        assert_eq!(
            tidy(plain),
            "Server selection timeout: No available servers"
        );
        let unrelated = "a message with, labels: but nothing after";
        assert_eq!(tidy(unrelated), unrelated);
    }
}
