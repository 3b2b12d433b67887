//! The binary's command line, run as a user would.

use std::process::Command;

#[test]
fn version_prints_the_package_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("--version")
        .output()
        .expect("run ringcast --version");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("ringcast {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// A fresh directory holding a `.env` with `contents`, for running the
/// binary in.
fn dir_with_dotenv(contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcast-dotenv-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(".env"), contents).unwrap();
    dir
}

#[test]
fn dotenv_sets_unset_variables_and_the_environment_wins() {
    let dir = dir_with_dotenv("JWT_SECRET=secret-from-dotenv\nJWT_AUDIENCE=audience-from-dotenv\n");
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["token", "--sub", "alice"])
        .current_dir(&dir)
        .env_remove("JWT_SECRET")
        .env("JWT_AUDIENCE", "audience-from-environment")
        .output()
        .expect("run ringcast token");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["audience-from-environment"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(b"secret-from-dotenv"),
        &validation,
    )
    .expect("signed with the .env secret, for the environment's audience")
    .claims;
    assert_eq!(claims["sub"], "alice");
}

#[test]
fn a_malformed_dotenv_stops_the_binary() {
    let dir = dir_with_dotenv("JWT_SECRET=fine\nthis line is not an assignment\n");
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["token"])
        .current_dir(&dir)
        .output()
        .expect("run ringcast token");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("ringcast: cannot read .env:"),
        "{stderr}"
    );
}
