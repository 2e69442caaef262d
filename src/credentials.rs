//! Keelson's own credentials, as its environment may carry them: read here by name, and never
//! handed on to the processes Keelson starts (the local agent and, through it, the instances;
//! verification checks), which are other people's programs.

/// The daemon's API bearer token.
pub const API_TOKEN: &str = "KEELSON_API_TOKEN";
/// The token for https Git remotes.
pub const GIT_TOKEN: &str = "KEELSON_GIT_TOKEN";
/// The GitHub webhook secret.
pub const WEBHOOK_SECRET: &str = "KEELSON_WEBHOOK_SECRET";
/// The forge token, and GitHub Actions' own, in the order they are looked for.
pub const FORGE_TOKENS: [&str; 2] = ["KEELSON_FORGE_TOKEN", "GITHUB_TOKEN"];
/// The state store's password (or the file holding it, `STORE_PASSWORD_FILE`).
pub const STORE_PASSWORD: &str = "KEELSON_STORE_PASSWORD";
/// The file holding the state store's password.
pub const STORE_PASSWORD_FILE: &str = "KEELSON_STORE_PASSWORD_FILE";

/// Every variable that carries one of them.
pub const ALL: [&str; 6] = [
    API_TOKEN,
    GIT_TOKEN,
    WEBHOOK_SECRET,
    FORGE_TOKENS[0],
    FORGE_TOKENS[1],
    STORE_PASSWORD,
];

/// Calls `remove` with each of them, for a command about to start (`Command::env_remove`).
pub fn withhold(mut remove: impl FnMut(&'static str)) {
    for k in ALL {
        remove(k);
    }
}
