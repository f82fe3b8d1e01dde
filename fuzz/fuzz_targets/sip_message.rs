//! SIP message parsing (`message::Message`) and what the endpoint reads from a parsed
//! message (tags, branch, CSeq): no input may panic, and what hark writes back parses again.
//! The parser is compiled in from hark's source (it uses only `std`), so this builds in
//! seconds instead of rebuilding hark's whole dependency tree with coverage instrumentation.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/transport/sip/message.rs"]
mod message;

use libfuzzer_sys::fuzz_target;
use message::Message;

fuzz_target!(|data: &[u8]| {
    if let Some(head) = Message::parse_lenient(data) {
        let _ = (head.branch(), head.cseq(), head.to_tag(), head.from_tag());
    }
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let _ = (
        msg.method(),
        msg.code(),
        msg.call_id(),
        msg.header_values("Via"),
    );
    // What hark writes back must parse again.
    let written = msg.to_bytes();
    if let Err(e) = Message::parse(&written) {
        panic!("a parsed message, written again, does not parse: {e}");
    }
});
