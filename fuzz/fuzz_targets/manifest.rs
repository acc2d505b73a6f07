//! Manifest decoding on any text a user or a watched file can hand `kgw apply` or `kgw run -f`:
//! YAML parsing, the kinds' decoding and validation, and the "not supported yet" gate must
//! answer (accept or refuse), never panic or hang. What kgw accepts it must also read back the
//! same from its own writing (the state file, `kgw get -o yaml`): every object, written with
//! `api::yaml` and parsed again, is the same object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = api::parse_manifests(text, "fuzz") else {
        return;
    };
    for object in &objects {
        let _ = api::unsupported(object);
        let value = object.to_value();
        let written = api::yaml::to_string(&value);
        let again = api::parse_manifests(&written, "written")
            .unwrap_or_else(|e| panic!("kgw's own YAML does not read back: {e}\n{written}"));
        assert_eq!(again.len(), 1, "one object written, {} read back:\n{written}", again.len());
        assert_eq!(again[0].to_value(), value, "the object read back differs:\n{written}");
    }
});
