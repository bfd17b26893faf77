//! Service-certificate issuance with the CA key on SoftHSM: a new P-256 leaf key, the
//! certificate signed by the token, encoded, and checked under the CA's public key,
//! beside the token's signing rate through the same `KeySigner` in the same run (the
//! ceiling issuance can reach), at 1 and 4 concurrent issuers.
//!
//! Run: `source scripts/lib.sh; source scripts/softhsm.sh; softhsm_install;
//! softhsm_start /tmp/kw-softhsm; cargo bench -p keyward-pkcs11 --bench issuance`.
#![forbid(unsafe_code)]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use keyward_core::KeyUri;

use common::{PIN, issue_one, make_token, module, root_ca_on_token};

/// Operations per measurement (split evenly over the concurrent tasks).
const OPERATIONS: usize = 2_000;

fn main() {
    let module = module();
    let label = format!("bench-issue-{}", std::process::id());
    make_token(&label);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let uri = KeyUri::parse(&format!(
            "pkcs11:token={label};object=ca?module-path={}&pin-value={PIN}",
            module.display()
        ))
        .expect("uri");
        let (signer, ca) = root_ca_on_token(&uri).await;

        println!("| issuers | certificates/s (CA key on SoftHSM) | token signs/s via KeySigner | issuance / signing |");
        println!("|---|---|---|---|");
        for concurrency in [1usize, 4] {
            let signer = Arc::clone(&signer);
            let signs = rate(concurrency, move |_| {
                let signer = Arc::clone(&signer);
                async move {
                    signer.sign(&[0x5a; 512]).await.expect("sign");
                }
            })
            .await;
            let ca = ca.clone();
            let certs = rate(concurrency, move |i| {
                let ca = ca.clone();
                async move { issue_one(&ca, i).await }
            })
            .await;
            println!("| {concurrency} | {certs:.0} | {signs:.0} | {:.2} |", certs / signs);
        }
    });
}

/// Runs `op` [`OPERATIONS`] times over `concurrency` tasks (after a short warm-up) and
/// returns operations per second.
async fn rate<F, Fut>(concurrency: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for i in 0..50 {
        op(i).await;
    }
    let per_task = OPERATIONS / concurrency;
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    op(t * per_task + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (per_task * concurrency) as f64 / start.elapsed().as_secs_f64()
}
