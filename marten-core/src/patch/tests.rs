use super::*;
use crate::query::Path;

fn path(segments: Vec<&'static str>) -> Path {
    Path {
        segments,
        column: None,
    }
}

#[test]
fn an_operation_names_its_field_and_its_value() {
    let set = PatchOp::Set {
        path: path(vec!["a", "b"]),
        value: serde_json::json!(1),
    };
    assert_eq!(set.path().segments, ["a", "b"]);
    assert_eq!(set.value(), Some(&serde_json::json!(1)));
    let unset = PatchOp::Unset {
        path: path(vec!["note"]),
    };
    assert_eq!(unset.value(), None);
}
