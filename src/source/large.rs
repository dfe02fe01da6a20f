//! Change events over MongoDB's 16 MB limit. A large document updated with pre- and
//! post-images on makes an event the server refuses to send (BSONObjectTooLarge) on every
//! reopen. Where the server can (`$changeStreamSplitLargeEvent`, 6.0.9+), it sends such an
//! event in fragments, which [`Assembler`] puts back together; elsewhere [`mark_stage`]
//! has the server leave out the event's images and mark it, so it can be read, and the
//! engine's `engine.oversize` policy decides what happens to it.

use mongodb::bson::{Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};

/// The field a marked event carries: the size in bytes of what was left out.
pub(crate) const MARKER: &str = "changeflowOversize";

/// The parts of a change that can be large; a marked event has none of them.
const IMAGES: [&str; 3] = [
    "fullDocument",
    "fullDocumentBeforeChange",
    "updateDescription",
];

/// Above this many bytes of images and document key an event is marked. The server's
/// limit is 16 MiB + 16 KiB for the whole event; the rest of the envelope (namespace,
/// token, times) is small.
const MARK_ABOVE: i64 = 16 * 1024 * 1024 - 8 * 1024;

/// Server error: Unrecognized pipeline stage name (the split stage before 6.0.9).
pub(crate) const UNKNOWN_STAGE: i32 = 40324;

/// The last stage of a stream that splits large events.
pub fn split_stage() -> Document {
    doc! {"$changeStreamSplitLargeEvent": {}}
}

/// The last stage of a stream that cannot split: an event whose images would pass the
/// limit arrives without them, with [`MARKER`] set to their size. Sizes are taken per
/// field: the server cannot measure the whole event once it is too large.
pub(crate) fn mark_stage() -> Document {
    let mut sizes: Vec<Document> = IMAGES
        .iter()
        .map(|f| doc! {"$ifNull": [{"$bsonSize": format!("${f}")}, 0]})
        .collect();
    sizes.push(doc! {"$ifNull": [{"$bsonSize": "$documentKey"}, 0]});
    let size = doc! {"$add": sizes};
    let too_large = doc! {"$gt": [size.clone(), MARK_ABOVE]};
    let mut set = Document::new();
    for field in IMAGES {
        set.insert(
            field,
            doc! {"$cond": [too_large.clone(), "$$REMOVE", format!("${field}")]},
        );
    }
    set.insert(MARKER, doc! {"$cond": [too_large, size, "$$REMOVE"]});
    doc! {"$set": set}
}

/// The size a marked event's images had, if `raw` is marked.
pub(crate) fn marked_size(raw: &RawDocument) -> Option<i64> {
    match raw.get(MARKER).ok().flatten()? {
        RawBsonRef::Int32(n) => Some(i64::from(n)),
        RawBsonRef::Int64(n) => Some(n),
        RawBsonRef::Double(n) => Some(n as i64),
        _ => None,
    }
}

/// What [`Assembler::push`] makes of one change.
#[derive(Debug)]
pub(crate) enum Piece {
    /// A change that was never split.
    Whole(RawDocumentBuf),
    /// A split change, reassembled at its last fragment.
    Joined(RawDocumentBuf),
    /// Fragment `fragment` of `of` was kept; more are to come.
    Partial {
        /// Its number, from 1.
        fragment: i64,
        /// How many the change has.
        of: i64,
    },
    /// A fragment that does not continue what was kept (the kept ones are dropped).
    Broken(String),
}

/// Reassembles split events: `splitEvent: {fragment, of}` on each fragment; the first
/// holds the envelope, the later ones the remaining top-level fields. The whole change
/// takes the last fragment's `_id`, so the checkpoint moves past an event only after its
/// last fragment, and a restart in between reads it again from the first.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    kept: Vec<RawDocumentBuf>,
    of: i64,
}

impl Assembler {
    /// Whether fragments are kept: the stream's own position is then inside an event,
    /// which no checkpoint may name.
    pub fn is_partial(&self) -> bool {
        !self.kept.is_empty()
    }

    /// Takes one change as read.
    pub fn push(&mut self, raw: RawDocumentBuf) -> Piece {
        let Ok(split) = raw.get_document("splitEvent") else {
            if self.is_partial() {
                let kept = self.kept.len();
                self.kept.clear();
                return Piece::Broken(format!(
                    "a whole change arrived after {kept} of {} fragments",
                    self.of
                ));
            }
            return Piece::Whole(raw);
        };
        let number = |name| match split.get(name).ok().flatten() {
            Some(RawBsonRef::Int32(n)) => Some(i64::from(n)),
            Some(RawBsonRef::Int64(n)) => Some(n),
            _ => None,
        };
        let (Some(fragment), Some(of)) = (number("fragment"), number("of")) else {
            self.kept.clear();
            return Piece::Broken("splitEvent without numeric fragment and of".into());
        };
        let expected = self.kept.len() as i64 + 1;
        if fragment != expected || (self.is_partial() && of != self.of) || of < 1 {
            let kept = self.kept.len();
            self.kept.clear();
            return Piece::Broken(format!(
                "fragment {fragment} of {of} after {kept} kept fragments"
            ));
        }
        self.of = of;
        self.kept.push(raw);
        if fragment < of {
            return Piece::Partial { fragment, of };
        }
        let fragments = std::mem::take(&mut self.kept);
        match join(&fragments) {
            Ok(whole) => Piece::Joined(whole),
            Err(e) => Piece::Broken(format!("fragments do not join: {e}")),
        }
    }
}

/// One change from its fragments: the last `_id`, then every other field in order.
fn join(fragments: &[RawDocumentBuf]) -> Result<RawDocumentBuf, mongodb::bson::raw::Error> {
    let mut whole = RawDocumentBuf::new();
    if let Some(last) = fragments.last()
        && let Ok(token) = last.get_document("_id")
    {
        whole.append_ref("_id", token);
    }
    for fragment in fragments {
        for element in fragment.iter() {
            let (key, value) = element?;
            if key != "_id" && key != "splitEvent" {
                whole.append_ref(key, value);
            }
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::rawdoc;

    fn fragment(token: &str, n: i32, of: i32, fields: RawDocumentBuf) -> RawDocumentBuf {
        let mut raw = rawdoc! {"_id": {"_data": token}};
        for element in fields.iter() {
            let (k, v) = element.expect("valid");
            raw.append_ref(k, v);
        }
        raw.append("splitEvent", rawdoc! {"fragment": n, "of": of});
        raw
    }

    #[test]
    fn fragments_join_under_the_last_token() {
        let mut a = Assembler::default();
        let first = fragment(
            "01",
            1,
            2,
            rawdoc! {"operationType": "update", "fullDocumentBeforeChange": {"x": 1}},
        );
        assert!(matches!(
            a.push(first),
            Piece::Partial { fragment: 1, of: 2 }
        ));
        assert!(a.is_partial());
        let Piece::Joined(whole) = a.push(fragment("02", 2, 2, rawdoc! {"fullDocument": {"x": 2}}))
        else {
            panic!("not joined")
        };
        assert!(!a.is_partial());
        assert_eq!(
            whole,
            rawdoc! {
                "_id": {"_data": "02"},
                "operationType": "update",
                "fullDocumentBeforeChange": {"x": 1},
                "fullDocument": {"x": 2},
            }
        );
    }

    #[test]
    fn a_change_that_was_not_split_passes_and_a_broken_sequence_is_reported() {
        let mut a = Assembler::default();
        assert!(matches!(
            a.push(rawdoc! {"_id": {"_data": "01"}}),
            Piece::Whole(_)
        ));
        assert!(matches!(
            a.push(fragment("02", 2, 3, rawdoc! {})),
            Piece::Broken(_)
        ));
        assert!(matches!(
            a.push(fragment("03", 1, 3, rawdoc! {})),
            Piece::Partial { fragment: 1, of: 3 }
        ));
        assert!(matches!(
            a.push(rawdoc! {"_id": {"_data": "04"}}),
            Piece::Broken(_)
        ));
        assert!(!a.is_partial());
    }

    #[test]
    fn the_marker_size_is_read_from_any_number() {
        assert_eq!(marked_size(&rawdoc! {MARKER: 17_i64}), Some(17));
        assert_eq!(marked_size(&rawdoc! {MARKER: 17_i32}), Some(17));
        assert_eq!(marked_size(&rawdoc! {"other": 1}), None);
    }
}
