//! Manifest decoding on any text a user or a watched file can hand `kgw apply` or `kgw run -f`:
//! YAML parsing, the kinds' decoding and validation, and the "not supported yet" gate must
//! answer (accept or refuse), never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(objects) = api::parse_manifests(text, "fuzz") {
        for object in &objects {
            let _ = api::unsupported(object);
            let _ = object.to_value();
        }
    }
});
