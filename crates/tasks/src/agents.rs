//! Agent harnesses: how each coding agent is installed, which keys it needs, its non-interactive
//! command line, how its output is read and how MCP servers reach it. Data, not code paths: a
//! new agent is one more entry.

use stockade_core::{Error, Result};

/// How an agent's stdout is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON object per line (stream-json and friends): parsed into `events.jsonl`.
    JsonLines,
    /// Plain text: kept line by line.
    Text,
}

/// How an agent gets into the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// `npm install --prefix /root/.stockade/agents PACKAGE` (needs node and npm inside).
    Npm(&'static str),
    /// `pip install --prefix ... PACKAGE` (needs python3 and pip inside).
    Pip(&'static str),
    /// Not installable from a registry: use a prepared image (`STOCKADE_<AGENT>_IMAGE`).
    ImageOnly,
    /// Nothing to install (`command:`).
    Nothing,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Harness {
    /// As users type it: `claude-code`, `codex`, ...
    pub name: &'static str,
    /// The binary it installs.
    pub binary: &'static str,
    pub install: Install,
    /// Keys it needs; the first that is set wins for each group of alternatives.
    pub keys: &'static [&'static [&'static str]],
    pub output: OutputFormat,
    /// Environment variable naming a prepared image for it.
    pub image_env: &'static str,
    /// Fixed environment for its exec: no self-update, no telemetry, non-interactive.
    pub env: &'static [(&'static str, &'static str)],
}

/// Every agent Stockade knows, besides `command:`.
pub const HARNESSES: &[Harness] = &[
    Harness {
        name: "claude-code",
        binary: "claude",
        install: Install::Npm("@anthropic-ai/claude-code"),
        keys: &[&["ANTHROPIC_API_KEY"]],
        output: OutputFormat::JsonLines,
        image_env: "STOCKADE_CLAUDE_CODE_IMAGE",
        // IS_SANDBOX: it refuses to skip permission prompts as root unless told it is sandboxed.
        env: &[
            ("IS_SANDBOX", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ],
    },
    Harness {
        name: "codex",
        binary: "codex",
        install: Install::Npm("@openai/codex"),
        keys: &[&["OPENAI_API_KEY"]],
        output: OutputFormat::JsonLines,
        image_env: "STOCKADE_CODEX_IMAGE",
        env: &[],
    },
    Harness {
        name: "gemini",
        binary: "gemini",
        install: Install::Npm("@google/gemini-cli"),
        keys: &[&["GEMINI_API_KEY", "GOOGLE_API_KEY"]],
        output: OutputFormat::Text,
        image_env: "STOCKADE_GEMINI_IMAGE",
        env: &[],
    },
    Harness {
        name: "cursor",
        binary: "cursor-agent",
        install: Install::ImageOnly,
        keys: &[&["CURSOR_API_KEY"]],
        output: OutputFormat::JsonLines,
        image_env: "STOCKADE_CURSOR_IMAGE",
        env: &[],
    },
    Harness {
        name: "opencode",
        binary: "opencode",
        install: Install::Npm("opencode-ai"),
        keys: &[&["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"]],
        output: OutputFormat::Text,
        image_env: "STOCKADE_OPENCODE_IMAGE",
        env: &[],
    },
    Harness {
        name: "aider",
        binary: "aider",
        install: Install::Pip("aider-chat"),
        keys: &[&["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"]],
        output: OutputFormat::Text,
        image_env: "STOCKADE_AIDER_IMAGE",
        env: &[("AIDER_ANALYTICS", "false"), ("AIDER_CHECK_UPDATE", "false")],
    },
];

/// The shell harness: `command:SHELL` runs SHELL with the prompt in `$STOCKADE_PROMPT`.
pub const COMMAND: Harness = Harness {
    name: "command",
    binary: "sh",
    install: Install::Nothing,
    keys: &[],
    output: OutputFormat::Text,
    image_env: "",
    env: &[],
};

/// `--agent` parsed: `NAME[:PROVIDER:MODEL]`, or `command:SHELL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentChoice {
    pub harness: Harness,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// For `command:`.
    pub shell: Option<String>,
}

impl AgentChoice {
    pub fn parse(s: &str) -> Result<AgentChoice> {
        if let Some(shell) = s.strip_prefix("command:") {
            if shell.trim().is_empty() {
                return Err(Error::invalid(
                    "agent",
                    "command: needs a shell command after the colon",
                ));
            }
            return Ok(AgentChoice {
                harness: COMMAND,
                provider: None,
                model: None,
                shell: Some(shell.to_owned()),
            });
        }
        let mut parts = s.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let (provider, model) = (parts.next(), parts.next());
        let harness = HARNESSES
            .iter()
            .find(|h| h.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = HARNESSES.iter().map(|h| h.name).collect();
                Error::invalid(
                    "agent",
                    format!(
                        "{name:?} is not an agent Stockade knows ({}, or command:SHELL)",
                        known.join(", ")
                    ),
                )
            })?;
        if provider.is_some() && model.is_none() {
            return Err(Error::invalid(
                "agent",
                format!("{s:?}: expected AGENT:PROVIDER:MODEL"),
            ));
        }
        Ok(AgentChoice {
            harness,
            provider: provider.map(String::from),
            model: model.map(String::from),
            shell: None,
        })
    }

    /// Reads the keys this agent needs from `env`; a missing one is an error naming it.
    pub fn keys(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for group in self.harness.keys {
            match group
                .iter()
                .find_map(|k| env(k).filter(|v| !v.is_empty()).map(|v| ((*k).to_owned(), v)))
            {
                Some(kv) => out.push(kv),
                None => {
                    return Err(Error::invalid(
                        "agent",
                        format!(
                            "{} needs {} in the environment",
                            self.harness.name,
                            group.join(" or ")
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The command line that runs the agent on `prompt` non-interactively; `extra` goes before
    /// the prompt (MCP options from [`AgentChoice::mcp_plan`]); `openai_base_url` an
    /// OpenAI-compatible endpoint (Codex takes it as a model provider of its own).
    pub fn argv(&self, prompt: &str, extra: &[String], openai_base_url: Option<&str>) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
        let model = self.model.as_deref();
        let mut argv = match self.harness.name {
            "command" => s(&["sh", "-c", self.shell.as_deref().unwrap_or("true")]),
            "claude-code" => {
                let mut a = s(&[
                    "claude",
                    "-p",
                    prompt,
                    "--output-format",
                    "stream-json",
                    "--verbose",
                ]);
                a.extend(s(&["--dangerously-skip-permissions"]));
                if let Some(m) = model {
                    a.extend(s(&["--model", m]));
                }
                a
            }
            "codex" => {
                // The sandbox is the sandbox: Codex's own would nest inside it.
                let mut a = s(&[
                    "codex",
                    "exec",
                    "--json",
                    "--dangerously-bypass-approvals-and-sandbox",
                    "--skip-git-repo-check",
                ]);
                if let Some(m) = model {
                    a.extend(s(&["-m", m]));
                }
                if let Some(url) = openai_base_url {
                    a.extend([
                        "-c".to_owned(),
                        "model_provider=\"stockade-openai\"".to_owned(),
                        "-c".to_owned(),
                        format!(
                            "model_providers.stockade-openai={{name=\"OpenAI-compatible\", base_url=\"{url}\", env_key=\"OPENAI_API_KEY\", wire_api=\"responses\"}}"
                        ),
                    ]);
                }
                a.push(prompt.to_owned());
                a
            }
            "gemini" => {
                let mut a = s(&["gemini", "-p", prompt, "--yolo"]);
                if let Some(m) = model {
                    a.extend(s(&["-m", m]));
                }
                a
            }
            "cursor" => {
                let mut a = s(&[
                    "cursor-agent",
                    "-p",
                    prompt,
                    "--output-format",
                    "stream-json",
                    "--force",
                ]);
                if let Some(m) = model {
                    a.extend(s(&["--model", m]));
                }
                a
            }
            "opencode" => {
                let mut a = s(&["opencode", "run"]);
                if let (Some(p), Some(m)) = (self.provider.as_deref(), model) {
                    a.extend(["-m".to_owned(), format!("{p}/{m}")]);
                }
                a.push(prompt.to_owned());
                a
            }
            "aider" => {
                let mut a = s(&[
                    "aider",
                    "--yes-always",
                    "--no-auto-commits",
                    "--no-check-update",
                    "--message",
                    prompt,
                ]);
                if let Some(m) = model {
                    a.extend(s(&["--model", m]));
                }
                a
            }
            _ => Vec::new(),
        };
        if argv.is_empty() {
            argv = s(&["false"]);
        }
        match self.harness.name {
            "command" => {}
            // The prompt is their last, positional argument.
            "codex" | "opencode" => {
                let at = argv.len() - 1;
                argv.splice(at..at, extra.iter().cloned());
            }
            _ => argv.extend(extra.iter().cloned()),
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agents_and_models() {
        let a = AgentChoice::parse("claude-code:anthropic:sonnet").unwrap();
        assert_eq!(a.harness.name, "claude-code");
        assert_eq!(a.model.as_deref(), Some("sonnet"));
        let argv = a.argv("Fix bug", &["--mcp-config".into(), "/tmp/mcp.json".into()], None);
        assert_eq!(argv[..3], ["claude", "-p", "Fix bug"]);
        assert!(argv.windows(2).any(|w| w == ["--model", "sonnet"]));
        assert!(argv.windows(2).any(|w| w == ["--mcp-config", "/tmp/mcp.json"]));
        let c = AgentChoice::parse("command:echo hi > x").unwrap();
        assert_eq!(c.argv("p", &[], None), ["sh", "-c", "echo hi > x"]);
        for h in HARNESSES {
            assert!(!AgentChoice::parse(h.name)
                .unwrap()
                .argv("p", &[], None)
                .is_empty());
        }
        let codex = AgentChoice::parse("codex:openai:gpt-5-codex").unwrap();
        let argv = codex.argv("p", &["-c".into(), "x=1".into()], Some("http://127.0.0.1:9/v1"));
        assert_eq!(argv[argv.len() - 3..], ["-c", "x=1", "p"]);
        assert!(
            argv.iter()
                .any(|a| a.contains("base_url=\"http://127.0.0.1:9/v1\"")),
            "{argv:?}"
        );
        assert_eq!(argv.last().map(String::as_str), Some("p"));
    }

    #[test]
    fn bad_agents_and_missing_keys_are_named() {
        let e = AgentChoice::parse("warp-agent").unwrap_err().to_string();
        assert!(
            e.contains("\"warp-agent\" is not an agent") && e.contains("claude-code"),
            "{e}"
        );
        assert!(AgentChoice::parse("command:").is_err());
        assert!(AgentChoice::parse("codex:openai").is_err());
        let a = AgentChoice::parse("aider").unwrap();
        let none = |_: &str| None;
        let e = a.keys(&none).unwrap_err().to_string();
        assert_eq!(e, "invalid agent: aider needs ANTHROPIC_API_KEY or OPENAI_API_KEY or OPENROUTER_API_KEY in the environment");
        let some = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk".to_owned());
        assert_eq!(
            a.keys(&some).unwrap(),
            [("OPENAI_API_KEY".to_owned(), "sk".to_owned())]
        );
    }
}

/// How MCP servers reach an agent: files to write in the sandbox and arguments to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpPlan {
    /// (absolute path in the sandbox, contents).
    pub files: Vec<(String, Vec<u8>)>,
    pub args: Vec<String>,
}

/// One server of an `{"mcpServers": {NAME: {command, args, env}}}` file (the format Claude Code,
/// Gemini CLI and Cursor read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct McpServer {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl AgentChoice {
    /// Turns an MCP servers file into what this agent reads; an agent without MCP support, a
    /// malformed file or an unusable server name is an error naming it.
    pub fn mcp_plan(&self, mcp: &[u8]) -> Result<McpPlan> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct File {
            mcp_servers: std::collections::BTreeMap<String, McpServer>,
        }
        let file: File = serde_json::from_slice(mcp).map_err(|e| {
            Error::invalid(
                "mcp",
                format!("expected {{\"mcpServers\": {{NAME: {{command, args, env}}}}}}: {e}"),
            )
        })?;
        for name in file.mcp_servers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
            {
                return Err(Error::invalid(
                    "mcp",
                    format!("server name {name:?}: use letters, digits, '_' and '-'"),
                ));
            }
        }
        let same_file = |path: &str| McpPlan {
            files: vec![(path.to_owned(), mcp.to_vec())],
            args: Vec::new(),
        };
        Ok(match self.harness.name {
            "claude-code" => McpPlan {
                files: vec![(MCP_FILE.to_owned(), mcp.to_vec())],
                args: vec!["--mcp-config".into(), MCP_FILE.into()],
            },
            "gemini" => same_file("/root/.gemini/settings.json"),
            "cursor" => same_file("/root/.cursor/mcp.json"),
            "codex" => {
                let mut args = Vec::new();
                for (name, s) in &file.mcp_servers {
                    let list = |v: &[String]| {
                        format!(
                            "[{}]",
                            v.iter().map(|a| toml_string(a)).collect::<Vec<_>>().join(", ")
                        )
                    };
                    args.extend([
                        "-c".to_owned(),
                        format!("mcp_servers.{name}.command={}", toml_string(&s.command)),
                    ]);
                    args.extend([
                        "-c".to_owned(),
                        format!("mcp_servers.{name}.args={}", list(&s.args)),
                    ]);
                    if !s.env.is_empty() {
                        let env: Vec<String> = s
                            .env
                            .iter()
                            .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                            .collect();
                        args.extend([
                            "-c".to_owned(),
                            format!("mcp_servers.{name}.env={{{}}}", env.join(", ")),
                        ]);
                    }
                }
                McpPlan {
                    files: Vec::new(),
                    args,
                }
            }
            "opencode" => {
                let servers: serde_json::Map<String, serde_json::Value> = file
                    .mcp_servers
                    .iter()
                    .map(|(name, s)| {
                        let mut command = vec![s.command.clone()];
                        command.extend(s.args.iter().cloned());
                        (
                            name.clone(),
                            serde_json::json!({ "type": "local", "command": command, "environment": s.env }),
                        )
                    })
                    .collect();
                let config = serde_json::json!({ "mcp": servers });
                McpPlan {
                    files: vec![(
                        "/root/.config/opencode/opencode.json".into(),
                        config.to_string().into_bytes(),
                    )],
                    args: Vec::new(),
                }
            }
            other => {
                return Err(Error::invalid(
                    "mcp",
                    format!("{other} does not take MCP servers"),
                ))
            }
        })
    }
}

/// Where the MCP file goes for agents that take a path.
pub const MCP_FILE: &str = "/root/.stockade/mcp.json";

#[cfg(test)]
mod mcp_tests {
    use super::*;

    const FILE: &str = r#"{"mcpServers": {"files": {"command": "npx", "args": ["-y", "srv"], "env": {"ROOT": "/workspace"}}}}"#;

    #[test]
    fn each_agent_gets_servers_its_way() {
        let plan = AgentChoice::parse("claude-code")
            .unwrap()
            .mcp_plan(FILE.as_bytes())
            .unwrap();
        assert_eq!(plan.args, ["--mcp-config", MCP_FILE]);
        let plan = AgentChoice::parse("codex")
            .unwrap()
            .mcp_plan(FILE.as_bytes())
            .unwrap();
        assert_eq!(
            plan.args,
            [
                "-c",
                "mcp_servers.files.command=\"npx\"",
                "-c",
                "mcp_servers.files.args=[\"-y\", \"srv\"]",
                "-c",
                "mcp_servers.files.env={\"ROOT\" = \"/workspace\"}"
            ]
        );
        let plan = AgentChoice::parse("gemini")
            .unwrap()
            .mcp_plan(FILE.as_bytes())
            .unwrap();
        assert_eq!(plan.files[0].0, "/root/.gemini/settings.json");
        let plan = AgentChoice::parse("opencode")
            .unwrap()
            .mcp_plan(FILE.as_bytes())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plan.files[0].1).unwrap();
        assert_eq!(
            v["mcp"]["files"]["command"],
            serde_json::json!(["npx", "-y", "srv"])
        );
        let e = AgentChoice::parse("aider")
            .unwrap()
            .mcp_plan(FILE.as_bytes())
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid mcp: aider does not take MCP servers");
        let e = AgentChoice::parse("codex")
            .unwrap()
            .mcp_plan(br#"{"mcpServers": {"a b": {"command": "x"}}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("server name \"a b\""));
        assert!(AgentChoice::parse("codex").unwrap().mcp_plan(b"{}").is_err());
    }
}
