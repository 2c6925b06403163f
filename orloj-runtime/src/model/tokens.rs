//! Token estimates (spec runtime §6.4) for providers that report no usage.

use orloj_core::model::ToolCall;

/// The per-call estimate: 12 + ⌊len(trimmed prompt)/4⌋ + ⌊len(output)/4⌋ + Σ over tool calls
/// (8 + ⌊len(name)/4⌋ + ⌊len(input)/4⌋) + 2×step, lengths in characters.
pub fn estimate_call_tokens(prompt: &str, output: &str, tool_calls: &[ToolCall], step: u32) -> u64 {
    let quarter = |s: &str| s.chars().count() as u64 / 4;
    let calls: u64 = tool_calls
        .iter()
        .map(|c| 8 + quarter(&c.name) + quarter(&c.input))
        .sum();
    12 + quarter(prompt.trim()) + quarter(output) + calls + 2 * u64::from(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_of_the_spec() {
        // mock provider, model gpt-4o, prompt `plan`, no tools: 12 + 1 + 4 + 2 = 19.
        assert_eq!(
            estimate_call_tokens("plan", "model=gpt-4o step=1", &[], 1),
            19
        );
    }

    #[test]
    fn tool_calls_and_steps_add_up() {
        let call = ToolCall {
            id: "c1".into(),
            name: "web_search".into(),
            input: "rust async".into(),
        };
        // 12 + 0 (prompt trimmed to "ab") + 1 + (8 + 2 + 2) + 6
        assert_eq!(estimate_call_tokens("  ab  ", "abcd", &[call], 3), 31);
        // lengths count characters, not bytes
        assert_eq!(estimate_call_tokens("éééé", "", &[], 0), 13);
    }
}
