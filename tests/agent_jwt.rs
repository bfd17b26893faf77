//! End-to-end: JWT-SVIDs from `keyward agent` (FetchJWTSVID, FetchJWTBundles,
//! ValidateJWTSVID), checked with the `spiffe` crate's own JWT validation and with a raw
//! gRPC client.

mod agent_common;
mod common;
mod jwt_common;

use std::time::Duration;

use agent_common::*;
use common::{required_env, softhsm_token, unique};
use jwt_common as jwt;
use serde_json::json;
use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient};
use tokio_stream::StreamExt;

async fn client(agent: &Agent) -> WorkloadApiClient {
    WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .expect("connect with the spiffe crate")
}

/// Two entries for root (api, db) and the given `[jwt]` section (may be empty).
fn entries(jwt_section: &str) -> String {
    format!(
        "{}{}\n{jwt_section}\n",
        entry("api", 0, "1h", "hint = \"internal\""),
        entry("db", 0, "1h", "")
    )
}

/// Fetches a token with the spiffe crate and validates it offline against the JWKS
/// the same client fetched; returns the token.
async fn fetch_and_validate_offline(agent: &Agent) -> String {
    let c = client(agent).await;
    let svid = c
        .fetch_jwt_svid(["web"], None)
        .await
        .unwrap_or_else(|e| panic!("fetch a JWT-SVID: {e}\n{}", agent.log()));
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/api");
    assert_eq!(svid.audience(), ["web".to_string()]);
    let bundles = c.fetch_jwt_bundles().await.expect("fetch JWT bundles");
    let bundle = bundles
        .get(&TrustDomain::new("example.org").unwrap())
        .expect("a JWT bundle for example.org");
    let authority = bundle
        .find_jwt_authority(svid.key_id())
        .expect("the token's kid is in the bundle");
    let jwk: serde_json::Value = serde_json::from_slice(authority.jwk_json()).unwrap();
    assert_eq!(jwk["use"], "jwt-svid");
    let valid = JwtSvid::parse_and_validate(svid.token(), &bundles, &["web"])
        .unwrap_or_else(|e| panic!("the spiffe crate rejects the token: {e:?}"));
    assert_eq!(valid.spiffe_id(), svid.spiffe_id());
    svid.token().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_jwt_svid_validates_against_the_served_jwks_and_through_the_agent() {
    let mut agent = Agent::new(&entries(""));
    agent.start();
    let token = fetch_and_validate_offline(&agent).await;
    let header = jwt::part(&token, 0);
    assert_eq!(header["alg"], "ES256", "ES256 by default");
    assert_eq!(header["typ"], "JWT");
    let claims = jwt::part(&token, 1);
    assert_eq!(claims["aud"], json!(["web"]));
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    // The agent validates its own token and returns the claims.
    let c = client(&agent).await;
    let checked = c.validate_jwt_token("web", &token).await.expect("validate");
    assert_eq!(checked.spiffe_id().to_string(), "spiffe://example.org/api");
    let raw = jwt::validate(&agent.socket, "web", &token).await.unwrap();
    let fields = raw.claims.expect("claims").fields;
    assert_eq!(
        fields["sub"].kind,
        Some(prost_types::value::Kind::StringValue(
            "spiffe://example.org/api".into()
        ))
    );
    // One token per entry, with the entry's hint; a spiffe_id filter picks one.
    let all = jwt::fetch(&agent.socket, &["web", "mail"], "")
        .await
        .unwrap();
    let ids: Vec<_> = all.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, ["spiffe://example.org/api", "spiffe://example.org/db"]);
    assert_eq!(all.svids[0].hint, "internal");
    assert_eq!(
        jwt::part(&all.svids[1].svid, 1)["sub"],
        "spiffe://example.org/db"
    );
    let db = SpiffeId::new("spiffe://example.org/db").unwrap();
    let only = c
        .fetch_jwt_svid(["web"], Some(&db))
        .await
        .expect("db token");
    assert_eq!(only.spiffe_id(), &db);
    // Someone else's identity, and an empty audience, are refused.
    let other = jwt::fetch(&agent.socket, &["web"], "spiffe://example.org/other")
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
    let empty = jwt::fetch(&agent.socket, &[], "").await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty:?}");
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_misaddressed_and_expired_tokens_are_rejected() {
    let mut agent = Agent::new(&entries("[jwt]\nttl = \"3s\"\n"));
    agent.start();
    let token = fetch_and_validate_offline(&agent).await;
    // Flip a claim and re-encode it: the signature no longer matches.
    let mut claims = jwt::part(&token, 1);
    claims["sub"] = json!("spiffe://example.org/admin");
    let forged = jwt::with_claims(&token, &claims);
    let e = jwt::validate(&agent.socket, "web", &forged)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("signature"), "{}", e.message());
    let c = client(&agent).await;
    let bundles = c.fetch_jwt_bundles().await.unwrap();
    assert!(JwtSvid::parse_and_validate(&forged, &bundles, &["web"]).is_err());
    // The right token for another audience.
    let e = jwt::validate(&agent.socket, "mail", &token)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("'mail'"), "{}", e.message());
    // The same token once it has expired (ttl 3 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let e = loop {
        match jwt::validate(&agent.socket, "web", &token).await {
            Ok(_) => assert!(tokio::time::Instant::now() < deadline, "never expired"),
            Err(e) => break e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("expired"), "{}", e.message());
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_signs_tokens_that_verify_with_a_key_file() {
    for (alg, jose) in [
        ("ES256", "ES256"),
        ("ES384", "ES384"),
        ("RS256", "RS256"),
        ("rsa-3072", "RS256"),
        ("EdDSA", "EdDSA"),
    ] {
        let mut agent = Agent::new("");
        let key = agent.dir.path().join("keys/jwt.pem");
        agent.write_config(&entries(&format!(
            "[jwt]\nkey = \"file:{}\"\nalgorithm = \"{alg}\"\n",
            key.display()
        )));
        agent.start();
        assert_eq!(common::mode(&key), 0o600, "{alg}: the key file is private");
        let fetched = jwt::fetch(&agent.socket, &["web"], "").await.unwrap();
        let token = &fetched.svids[0].svid;
        assert_eq!(jwt::part(token, 0)["alg"], jose, "{alg}");
        let jwks = jwt::jwks(&agent.socket).await;
        assert_eq!(
            jwt::kids(&jwks),
            [jwt::part(token, 0)["kid"].as_str().unwrap()]
        );
        if jose == "EdDSA" {
            // The spiffe crate knows no EdDSA (not in the JWT-SVID profile): check the
            // signature directly against the published OKP key.
            jwt::verify_eddsa(token, &jwks["keys"][0]);
        } else {
            fetch_and_validate_offline(&agent).await;
        }
        let v = jwt::validate(&agent.socket, "web", token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(v.spiffe_id, "spiffe://example.org/api");
        agent.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_key_on_softhsm_signs_and_survives_a_restart() {
    let module = required_env("KEYWARD_TEST_PKCS11_MODULE");
    let mut agent = Agent::new("");
    let (token, pin) = softhsm_token(agent.dir.path(), "kw-jwt");
    agent.write_config(&entries(&format!(
        "[jwt]\nkey = \"pkcs11:token={token};object=jwt?module-path={module}&pin-source=file:{}\"\n",
        pin.display()
    )));
    agent.start();
    let first = fetch_and_validate_offline(&agent).await;
    let kid = jwt::part(&first, 0)["kid"].clone();
    agent.stop();
    // A restart keeps signing with the same HSM key, so earlier tokens stay valid.
    agent.start();
    let again = fetch_and_validate_offline(&agent).await;
    assert_eq!(jwt::part(&again, 0)["kid"], kid);
    jwt::validate(&agent.socket, "web", &first)
        .await
        .expect("a token from before the restart validates");
    agent.stop();
}

/// The next JWT bundle set from a FetchJWTBundles stream, waiting at most `secs`.
async fn next_jwks<S>(stream: &mut S, secs: u64) -> spiffe::JwtBundleSet
where
    S: tokio_stream::Stream<Item = Result<spiffe::JwtBundleSet, spiffe::WorkloadApiError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(secs), stream.next())
        .await
        .expect("a JWKS message in time")
        .expect("stream open")
        .expect("a JWKS")
}

/// Starts an agent whose JWT key is `key` with `algorithm` (created by the agent) and
/// checks a token offline and through ValidateJWTSVID.
async fn jwt_key_in_backend(key: &str, algorithm: &str) {
    let mut agent = Agent::new("");
    agent.write_config(&entries(&format!(
        "[jwt]\nkey = \"{key}\"\nalgorithm = \"{algorithm}\"\n"
    )));
    agent.start();
    let token = fetch_and_validate_offline(&agent).await;
    assert_eq!(jwt::part(&token, 0)["alg"], algorithm);
    jwt::validate(&agent.socket, "web", &token)
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_key_in_kms_signs_tokens() {
    required_env("KEYWARD_TEST_KMS_ENDPOINT");
    jwt_key_in_backend(&format!("awskms:alias/{}", unique("kw-jwt")), "ES256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_key_in_transit_signs_tokens() {
    required_env("KEYWARD_TEST_VAULT_ADDR");
    jwt_key_in_backend(&format!("transit:{}", unique("kw-jwt")), "RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_the_next_key_ahead_and_keeps_the_old_one_until_its_tokens_expire() {
    let mut agent = Agent::new(&entries(
        "[jwt]\nttl = \"20s\"\nkey_ttl = \"4s\"\nkey_overlap = \"2s\"\n",
    ));
    agent.start();
    let c = client(&agent).await;
    let mut stream = c.stream_jwt_bundles().await.expect("open the JWKS stream");
    let td = TrustDomain::new("example.org").unwrap();
    let first = next_jwks(&mut stream, 10).await;
    let old = c.fetch_jwt_svid(["web"], None).await.expect("a token");
    let old_kid = old.key_id().to_string();
    let kids = |set: &spiffe::JwtBundleSet| -> Vec<String> {
        let mut k: Vec<String> = set
            .get(&td)
            .unwrap()
            .jwt_authorities()
            .map(|a| a.key_id().to_string())
            .collect();
        k.sort();
        k
    };
    assert!(kids(&first).contains(&old_kid));
    // The next key is published before it signs: a message with both keys.
    let both = loop {
        let m = next_jwks(&mut stream, 20).await;
        if kids(&m).len() >= 2 {
            break m;
        }
    };
    assert!(kids(&both).contains(&old_kid), "old key still published");
    // Then it signs, and the old key's token still validates.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let new = loop {
        let t = c.fetch_jwt_svid(["web"], None).await.expect("a token");
        if t.key_id() != old_kid {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new signing key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(kids(&both).contains(&new.key_id().to_string()));
    let now = c.fetch_jwt_bundles().await.unwrap();
    JwtSvid::parse_and_validate(old.token(), &now, &["web"]).expect("old token, current JWKS");
    JwtSvid::parse_and_validate(new.token(), &now, &["web"]).expect("new token");
    jwt::validate(&agent.socket, "web", old.token())
        .await
        .expect("the agent validates the old key's token");
    // The old key leaves the JWKS only once its last token has expired.
    let gone = loop {
        let m = next_jwks(&mut stream, 60).await;
        if !kids(&m).contains(&old_kid) {
            break m;
        }
    };
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        old.expiry().unix_timestamp() <= unix_now,
        "the old key left while its token was valid"
    );
    assert!(!kids(&gone).is_empty());
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_get_suffixed_names_and_a_restart_keeps_publishing_them() {
    let mut agent = Agent::new("");
    let keys = agent.dir.path().join("keys");
    agent.write_config(&entries(&format!(
        "[jwt]\nkey = \"file:{}/jwt.pem\"\nttl = \"1m\"\nkey_ttl = \"3s\"\nkey_overlap = \"1s\"\n",
        keys.display()
    )));
    agent.start();
    let first = jwt::fetch(&agent.socket, &["web"], "").await.unwrap().svids[0]
        .svid
        .clone();
    let first_kid = jwt::part(&first, 0)["kid"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        let t = jwt::fetch(&agent.socket, &["web"], "").await.unwrap().svids[0]
            .svid
            .clone();
        if jwt::part(&t, 0)["kid"] != first_kid {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rotation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The first key is the configured file; later ones are jwt-<unix time>.pem.
    let mut names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("jwt"))
        .collect();
    names.sort();
    assert!(names.contains(&"jwt.pem".to_string()), "{names:?}");
    let suffixed = names.iter().filter(|n| {
        n.strip_prefix("jwt-")
            .and_then(|r| r.strip_suffix(".pem"))
            .is_some_and(|t| t.len() >= 10 && t.bytes().all(|b| b.is_ascii_digit()))
    });
    assert!(suffixed.count() >= 1, "{names:?}");
    let record = std::fs::read_to_string(agent.state.join("agent/generations.json")).unwrap();
    assert!(
        !record.contains("jwt.pem") && !record.contains("file:"),
        "{record}"
    );
    agent.stop();
    // After a restart both tokens still validate: every published key was reopened.
    agent.start();
    let jwks = jwt::jwks(&agent.socket).await;
    for t in [&first, &second] {
        let kid = jwt::part(t, 0)["kid"].as_str().unwrap().to_string();
        assert!(jwt::kids(&jwks).contains(&kid), "{kid} republished");
        jwt::validate(&agent.socket, "web", t)
            .await
            .unwrap_or_else(|e| panic!("a token from before the restart: {e:?}"));
    }
    agent.stop();
}
