//! Outside input never panics the sandbox's parsers: sign-in messages and
//! signatures, fault specs, orders.

use proptest::prelude::*;
use sandbox::auth::Authenticator;
use sandbox::faults::FaultSpec;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_in_never_panics_on_arbitrary_messages(message in ".{0,400}", signature in "(0x)?[0-9a-fA-F]{0,140}") {
        let auth = Authenticator::new("localhost", 137);
        let _ = futures::executor::block_on(auth.verify(&message, &signature, "device"));
    }

    #[test]
    fn sign_in_never_panics_on_mutated_valid_messages(cut in 0usize..300, insert in ".{0,10}") {
        let valid = "localhost wants you to sign in with your Ethereum account:\n\
            0x6Da01670d8fc844e736095918bbE11fE8D564163\n\nSign in.\n\nURI: http://localhost/login\n\
            Version: 1\nChain ID: 137\nNonce: abcdefgh12345678\nIssued At: 2026-11-30T13:00:00.000Z";
        let mut chars: Vec<char> = valid.chars().collect();
        let at = cut.min(chars.len());
        chars.splice(at..at, insert.chars());
        let message: String = chars.into_iter().collect();
        let auth = Authenticator::new("localhost", 137);
        let outcome = futures::executor::block_on(auth.verify(&message, &format!("0x{}", "11".repeat(65)), "d"));
        prop_assert!(outcome.is_err(), "an unsigned message is never accepted");
    }

    #[test]
    fn order_validation_accepts_only_digits_and_printable_keys(key in ".{0,210}", price in ".{0,80}") {
        let order = sandbox::orders::NewOrder {
            idempotency_key: key.clone(),
            account: "0xabc".to_owned(),
            nft_id: 1,
            kind: sandbox::orders::OrderKind::Buy,
            price_wei: price.clone(),
        };
        let valid_key = !key.is_empty() && key.len() <= 200 && !key.chars().any(char::is_control);
        let valid_price = !price.is_empty() && price.len() <= 78 && price.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(order.validate().is_ok(), valid_key && valid_price);
    }

    #[test]
    fn fault_specs_parse_or_fail_without_panicking(json in "\\{.{0,120}\\}") {
        if let Ok(spec) = serde_json::from_str::<FaultSpec>(&json) {
            let _ = spec.validate();
        }
    }

    #[test]
    fn valid_fault_specs_round_trip(latency in 0u64..600_000, rate in 0.0f64..=1.0, every in 1u64..100_000) {
        let spec = FaultSpec { latency_ms: latency, error_rate: rate, stall_every_ms: every, stall_for_ms: every / 2, ..FaultSpec::default() };
        prop_assert!(spec.validate().is_ok());
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        prop_assert_eq!(back, spec);
    }
}
