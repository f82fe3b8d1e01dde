//! Properties of the chat context over random conversations: truncation keeps what the LLM
//! needs and never leaves a provider-rejected orphan; JSON round trips are exact.

use std::collections::HashSet;

use hark::agent::context::{
    ChatContent, ChatContext, ChatItem, ChatMessage, ChatRole, FunctionCall, ImageContent,
    InferenceDetail,
};
use proptest::prelude::*;
use serde_json::json;

/// One step of a conversation; call ids come from a small pool so exchanges interleave and
/// sometimes share an id, as second-resolution Python ids did.
#[derive(Debug, Clone)]
enum Op {
    Msg(ChatRole, String),
    Call(u8),
    Output(u8),
}

fn role() -> impl Strategy<Value = ChatRole> {
    prop_oneof![
        Just(ChatRole::System),
        Just(ChatRole::Developer),
        Just(ChatRole::User),
        Just(ChatRole::Assistant),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (role(), "[a-z]{0,4}").prop_map(|(r, t)| Op::Msg(r, t)),
        2 => (0u8..6).prop_map(Op::Call),
        2 => (0u8..6).prop_map(Op::Output),
    ]
}

fn apply(ctx: &mut ChatContext, op: &Op) {
    match op {
        Op::Msg(role, text) => {
            ctx.add_message(*role, text.as_str());
        }
        Op::Call(id) => {
            ctx.add_function_call("tool", "{}", Some(format!("c{id}")));
        }
        Op::Output(id) => {
            ctx.add_function_output("tool", "ok", format!("c{id}"), false);
        }
    }
}

fn build(ops: &[Op]) -> ChatContext {
    let mut ctx = ChatContext::new();
    for op in ops {
        apply(&mut ctx, op);
    }
    ctx
}

/// Every kept output has a kept call, and every kept call that was answered keeps an answer.
fn assert_no_orphans(original: &[ChatItem], kept: &[ChatItem]) -> Result<(), TestCaseError> {
    let kept_calls: HashSet<&str> = kept
        .iter()
        .filter_map(|i| match i {
            ChatItem::FunctionCall(c) => Some(c.call_id.as_str()),
            _ => None,
        })
        .collect();
    let kept_outputs: HashSet<&str> = kept
        .iter()
        .filter_map(|i| match i {
            ChatItem::FunctionCallOutput(o) => Some(o.call_id.as_str()),
            _ => None,
        })
        .collect();
    let answered: HashSet<&str> = original
        .iter()
        .filter_map(|i| match i {
            ChatItem::FunctionCallOutput(o) => Some(o.call_id.as_str()),
            _ => None,
        })
        .collect();
    for o in &kept_outputs {
        prop_assert!(kept_calls.contains(o), "output {o} kept without its call");
    }
    for c in &kept_calls {
        prop_assert!(
            !answered.contains(c) || kept_outputs.contains(c),
            "call {c} kept without its output"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn truncate_keeps_instructions_and_newest_items_without_orphans(
        ops in prop::collection::vec(op(), 0..40),
        max in 0usize..45,
    ) {
        let mut ctx = build(&ops);
        let original = ctx.items().to_vec();
        let system = original.iter().find(|i| i.is_instructions()).cloned();
        ctx.truncate(max);
        let kept = ctx.items();

        let ids: Vec<&str> = original.iter().map(ChatItem::id).collect();
        let window = &ids[ids.len().saturating_sub(max)..];

        // The first instructions message survives.
        if let Some(s) = &system {
            prop_assert!(kept.contains(s));
        }
        // At most max items, plus the instructions if they were older than the window.
        let outside: Vec<&ChatItem> =
            kept.iter().filter(|i| !window.contains(&i.id())).collect();
        prop_assert!(kept.len() - outside.len() <= max);
        prop_assert!(outside.len() <= 1);
        if let Some(o) = outside.first() {
            prop_assert_eq!(Some(*o), system.as_ref());
            prop_assert_eq!(&kept[0], *o);
        }
        // Order is kept: the result is a subsequence of the original.
        let mut pos = 0;
        for k in kept {
            let at = ids[pos..].iter().position(|id| *id == k.id());
            prop_assert!(at.is_some(), "{} out of order", k.id());
            pos += at.unwrap() + 1;
        }
        // The newest items are kept: every message in the window.
        for item in &original[original.len() - window.len()..] {
            if item.as_message().is_some() {
                prop_assert!(kept.contains(item), "message {} dropped", item.id());
            }
        }
        // The result starts with a message (no leading tool items).
        if let Some(first) = kept.first() {
            prop_assert!(first.as_message().is_some());
        }
        assert_no_orphans(&original, kept)?;
    }

    #[test]
    fn truncate_is_idempotent(ops in prop::collection::vec(op(), 0..40), max in 0usize..45) {
        let mut ctx = build(&ops);
        ctx.truncate(max);
        let once = ctx.clone();
        ctx.truncate(max);
        prop_assert_eq!(ctx, once);
    }

    #[test]
    fn truncate_changes_nothing_in_a_short_clean_conversation(
        turns in prop::collection::vec("[a-z]{1,4}", 0..10),
        extra in 0usize..5,
    ) {
        let mut ctx = ChatContext::new();
        ctx.set_instructions("be brief");
        for (n, t) in turns.iter().enumerate() {
            ctx.add_message(ChatRole::User, t.as_str());
            ctx.add_function_call("tool", "{}", Some(format!("c{n}")));
            ctx.add_function_output("tool", "ok", format!("c{n}"), false);
            ctx.add_message(ChatRole::Assistant, t.as_str());
        }
        let before = ctx.clone();
        ctx.truncate(before.len() + extra);
        prop_assert_eq!(ctx, before);
    }

    #[test]
    fn max_items_bounds_the_context_after_every_add(
        ops in prop::collection::vec(op(), 0..60),
        max in 1usize..12,
    ) {
        let mut ctx = ChatContext::new().with_max_items(Some(max));
        // An unbounded twin holds everything added, to tell which calls were answered. A call
        // id is reused only after its exchange, so old exchanges dropped from `ctx` cannot
        // alias new ones.
        let mut twin = ChatContext::new();
        let mut generation = [0u32; 6];
        for op in &ops {
            let op = match op {
                Op::Call(id) => {
                    generation[*id as usize] += 1;
                    Op::Call(*id)
                }
                other => other.clone(),
            };
            let unique = |id: u8| format!("c{id}_{}", generation[id as usize]);
            for c in [&mut ctx, &mut twin] {
                match &op {
                    Op::Msg(role, text) => {
                        c.add_message(*role, text.as_str());
                    }
                    Op::Call(id) => {
                        c.add_function_call("tool", "{}", Some(unique(*id)));
                    }
                    Op::Output(id) => {
                        c.add_function_output("tool", "ok", unique(*id), false);
                    }
                }
            }
            prop_assert!(ctx.len() <= max + 1);
            assert_no_orphans(twin.items(), ctx.items())?;
        }
    }

    #[test]
    fn json_round_trip_is_identity(items in prop::collection::vec(item(), 0..12)) {
        let ctx = ChatContext::from_items(items);
        let value = ctx.to_json();
        prop_assert_eq!(&ChatContext::from_json(&value).unwrap(), &ctx);
        let text = serde_json::to_string(&ctx).unwrap();
        let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(ChatContext::from_json(&reparsed).unwrap(), ctx);
    }
}

fn image() -> impl Strategy<Value = ImageContent> {
    let detail = prop_oneof![
        Just(InferenceDetail::Auto),
        Just(InferenceDetail::High),
        Just(InferenceDetail::Low),
    ];
    let source = prop_oneof![
        "\\PC{0,20}".prop_map(ImageContent::url),
        (prop::collection::vec(any::<u8>(), 0..16), "\\PC{0,12}")
            .prop_map(|(d, m)| ImageContent::inline(d, m)),
    ];
    (source, detail).prop_map(|(img, d)| img.with_detail(d))
}

fn content() -> impl Strategy<Value = ChatContent> {
    prop_oneof![
        "\\PC{0,12}".prop_map(ChatContent::Text),
        image().prop_map(ChatContent::Image),
    ]
}

fn item() -> impl Strategy<Value = ChatItem> {
    let message = (
        role(),
        prop::collection::vec(content(), 0..4),
        0.0f64..4e9,
        any::<bool>(),
    )
        .prop_map(|(role, content, created_at, interrupted)| {
            let mut m = ChatMessage::new(role, content);
            m.created_at = created_at;
            m.interrupted = interrupted;
            ChatItem::Message(m)
        });
    let metadata = prop_oneof![
        Just(None),
        "[a-z]{0,8}".prop_map(|s| Some(json!({"thought_signature": s}))),
    ];
    let call = ("\\PC{0,8}", "\\PC{0,8}", "\\PC{0,16}", metadata).prop_map(
        |(call_id, name, arguments, metadata)| {
            let mut ctx = ChatContext::new();
            let mut c: FunctionCall = ctx.add_function_call(name, arguments, Some(call_id));
            c.metadata = metadata;
            ChatItem::FunctionCall(c)
        },
    );
    let output = ("\\PC{0,8}", "\\PC{0,8}", "\\PC{0,16}", any::<bool>()).prop_map(
        |(call_id, name, output, is_error)| {
            let mut ctx = ChatContext::new();
            ChatItem::FunctionCallOutput(ctx.add_function_output(name, output, call_id, is_error))
        },
    );
    prop_oneof![message, call, output]
}
