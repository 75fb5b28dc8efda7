//! The request body's `model`, found and rewritten, from arbitrary bytes.
//! Never panics; a name found is exactly the JSON string at the range
//! given; a body cut anywhere either still finds the same name or says it
//! was cut; the response rewrite gives the same bytes however its input is
//! split, and leaves a body without the upstream's name unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_proxy::model::{Lookup, Rewrite, find, rewrite_request};

fn rewritten(pieces: &[&[u8]]) -> Vec<u8> {
    let mut rewrite = Rewrite::new("chat-lora-v8", "chat");
    let mut out = Vec::new();
    for piece in pieces {
        rewrite.feed(piece, &mut out);
    }
    rewrite.finish(&mut out);
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let cut = usize::from(split) * data.len() / 256;
    if let Lookup::Found { name, at } = find(data, true) {
        let value: String = serde_json::from_slice(&data[at.clone()]).expect("a JSON string");
        assert_eq!(value, name);
        let changed = rewrite_request(data, at, "x");
        assert!(matches!(find(&changed, true), Lookup::Found { name, .. } if name == "x"));
        // Cut short, the body either still shows the name or is "beyond".
        match find(&data[..cut], false) {
            Lookup::Found { name: early, .. } => assert_eq!(early, name),
            other => assert!(matches!(other, Lookup::Beyond | Lookup::NotJson), "{other:?}"),
        }
    }
    let whole = rewritten(&[data]);
    assert_eq!(whole, rewritten(&[&data[..cut], &data[cut..]]));
    if !data.windows(14).any(|w| w == b"\"chat-lora-v8\"") {
        assert_eq!(whole, data);
    }
});
