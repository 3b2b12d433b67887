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
