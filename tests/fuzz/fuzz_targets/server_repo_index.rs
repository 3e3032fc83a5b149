#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| penguindome_server::fuzzing::repo_index(data));
