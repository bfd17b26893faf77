//! End-to-end: the agent's configuration is checked at start (one error line with the
//! file position), reloaded on SIGHUP (an invalid file keeps the running one), and a
//! socket path held by another kind of file is refused.

mod agent_common;
mod common;

use std::time::Duration;

use agent_common::*;
use common::keyward_fails;
use spiffe::WorkloadApiClient;

#[test]
fn an_invalid_config_is_refused_with_its_file_position() {
    let agent = Agent::new(&entry("api", 0, "90 minutes", ""));
    let config = agent.config.to_str().unwrap().to_string();
    let line = keyward_fails(
        &agent.state,
        &["agent", "--config", &config],
        "invalid duration '90 minutes'",
    );
    // The entry's ttl is on line 13 of the generated file, its value at column 7.
    assert!(line.contains(&format!("{config}:13:7:")), "{line}");

    agent.write_config(&format!("{}colour = \"blue\"\n", entry("api", 0, "1h", "")));
    let line = keyward_fails(
        &agent.state,
        &["agent", "--config", &config],
        "unknown field `colour`",
    );
    assert!(line.contains(&format!("{config}:16:1:")), "{line}");
    assert!(!agent.socket.exists(), "nothing was served");
}

#[test]
fn a_socket_path_held_by_another_file_is_refused() {
    let agent = Agent::new(&entry("api", 0, "1h", ""));
    std::fs::create_dir_all(agent.socket.parent().unwrap()).unwrap();
    std::fs::write(&agent.socket, b"not a socket").unwrap();
    let config = agent.config.to_str().unwrap().to_string();
    keyward_fails(
        &agent.state,
        &["agent", "--config", &config],
        "is not a socket",
    );
    assert_eq!(
        std::fs::read(&agent.socket).unwrap(),
        b"not a socket",
        "the file is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_entries_and_an_invalid_file_keeps_the_running_config() {
    let mut agent = Agent::new(&entry("one", 0, "1h", ""));
    agent.start();
    let ids = || async {
        let c = WorkloadApiClient::connect_to(agent.endpoint())
            .await
            .expect("connect");
        let mut ids: Vec<String> = c
            .fetch_all_x509_svids()
            .await
            .expect("fetch")
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids().await, ["spiffe://example.org/one"]);

    agent.write_config(&[entry("one", 0, "1h", ""), entry("two", 0, "1h", "")].concat());
    agent.signal("HUP");
    let mut reloaded = false;
    for _ in 0..100 {
        if ids().await.len() == 2 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the new entry is served after SIGHUP:\n{}",
        agent.log()
    );
    assert_eq!(
        ids().await,
        ["spiffe://example.org/one", "spiffe://example.org/two"]
    );

    std::fs::write(&agent.config, "[agent]\nsocket = 5\n").unwrap();
    agent.signal("HUP");
    wait_for(
        "the reload error in the log",
        Duration::from_secs(10),
        || agent.log().contains("keeping the running one"),
    );
    assert_eq!(
        ids().await,
        ["spiffe://example.org/one", "spiffe://example.org/two"],
        "still served"
    );
    agent.stop();
}
