//! SDP offer parsing, codec negotiation and the answer written from it: no input may panic.
//! (The parser is compiled in from hark's source: it uses only `std`.)
#![no_main]
#![allow(dead_code)]

#[path = "../../src/transport/sip/sdp.rs"]
mod sdp;

use libfuzzer_sys::fuzz_target;
use sdp::Offer;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = Offer::parse(data) else {
        return;
    };
    let preference = ["PCMU".to_owned(), "PCMA".to_owned()];
    if let Ok(media) = offer.negotiate(&preference) {
        let local = "127.0.0.1:4000".parse().unwrap();
        let answer = sdp::answer(&offer, &media, local, 1, 1);
        assert!(answer.starts_with("v=0\r\n"));
    }
});
