//! `load_str` never panics: random edits of the example configurations and random text.

use proptest::prelude::*;
use tollgate::config::load_str;

const LAB: &str = include_str!("../config/lab.toml");
const AKS: &str = include_str!("../config/aks-egress.toml");

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("*.".to_string()),
        Just("/".to_string()),
        Just("/33".to_string()),
        Just("-".to_string()),
        Just("\"".to_string()),
        Just("[[group]]\n".to_string()),
        Just("[[group.collection.rule]]\n".to_string()),
        Just("priority = 99999999999\n".to_string()),
        Just("0".to_string()),
        Just("65536".to_string()),
        Just("é".to_string()),
        Just("\n".to_string()),
        Just("..".to_string()),
        "[ -~]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn edited_examples_never_panic(which in any::<bool>(), edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..6, token()), 1..5)) {
        let mut text = if which { LAB.to_string() } else { AKS.to_string() };
        for (at, del, ins) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            let mut j = (i + del).min(text.len());
            while !text.is_char_boundary(j) { j -= 1; }
            text.replace_range(i..j, &ins);
        }
        let _ = load_str(&text, "fuzz.toml");
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = load_str(&text, "fuzz.toml");
    }
}
