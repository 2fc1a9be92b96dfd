#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| contrast_fuzz::download_checks::check_zip(data));
