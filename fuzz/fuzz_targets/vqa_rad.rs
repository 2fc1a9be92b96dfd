#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| contrast_fuzz::claires_checks::check_vqa_rad(data));
