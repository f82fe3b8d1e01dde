//! RTP, RTCP, RFC 4733 telephone-event and comfort-noise parsing: no input may panic.
//! (The parsers are compiled in from hark's source: they use only `std`.)
#![no_main]
#![allow(dead_code)]

#[path = "../../src/transport/sip/media/cn.rs"]
mod cn;
#[path = "../../src/transport/sip/media/dtmf.rs"]
mod dtmf;
#[path = "../../src/transport/sip/media/rtcp.rs"]
mod rtcp;
#[path = "../../src/transport/sip/media/rtp.rs"]
mod rtp;

use libfuzzer_sys::fuzz_target;
use rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = RtpPacket::parse(data) {
        let _ = dtmf::TelephoneEvent::parse(p.payload);
        let _ = cn::parse_level(p.payload);
    }
    let _ = rtcp::parse_compound(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dtmf::parse_info("application/dtmf-relay", text);
        let _ = dtmf::parse_info("application/dtmf", text);
    }
});
