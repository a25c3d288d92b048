//! `examples/config/key-authority.toml` never rots: it loads through the real settings loader, and
//! it lists every setting with its default value (its TOML equals the defaults serialized).

use std::path::PathBuf;

use key_authority::Settings;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config/key-authority.toml")
}

#[test]
fn the_example_config_loads_and_holds_every_default() {
    // Variables of a developer's shell would override the file.
    assert!(
        std::env::vars().all(|(name, _)| !name.starts_with("SEER_KEY_AUTHORITY__")),
        "unset the SEER_KEY_AUTHORITY__* variables to run this test"
    );
    let path = example();
    let loaded = Settings::load(Some(&path))
        .unwrap_or_else(|error| panic!("{} does not load: {error:#}", path.display()));
    assert_eq!(
        loaded,
        Settings::default(),
        "the example's values are the defaults"
    );

    let text = std::fs::read_to_string(&path).expect("read the example");
    let file: toml::Value = toml::from_str(&text).expect("the example is TOML");
    let defaults = toml::Value::try_from(Settings::default()).expect("defaults as TOML");
    assert_eq!(
        file, defaults,
        "the example lists every key (and only those)"
    );
}
