#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| contrast_fuzz::core::check_checkpoint(data));
