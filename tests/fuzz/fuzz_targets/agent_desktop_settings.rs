#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| penguindome_agent::fuzzing::desktop_settings(data));
