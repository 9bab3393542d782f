//! The command line as a person meets it: completions, the man page.

/// Shell completions and the man page come from the clap definitions
/// (issue #20): every subcommand is in both, and an unknown shell is
/// refused naming the ones there are.
#[test]
fn completions_and_the_man_page_name_every_command() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringraft"))
            .args(args)
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{o:?}");
        let text = String::from_utf8_lossy(&o.stdout);
        for word in ["node", "ctl", "move-replica", "decommission", "listen-resp"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let o = run(&["completions", "tcsh"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bash"), "{o:?}");
    let o = run(&["man"]);
    assert!(o.status.success(), "{o:?}");
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        page.starts_with(".ie") && page.contains(".TH ringraft 1"),
        "{page}"
    );
    assert!(
        page.contains("completions") && page.contains("node"),
        "{page}"
    );
}
