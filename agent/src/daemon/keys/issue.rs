//! `SignX509SVID`: an X.509-SVID for a key the workload keeps. The CSR is checked
//! (`csr`), its SPIFFE ID must be that of an entry matching the caller and its DNS and
//! IP names among that entry's; the SVID is then issued through the agent's own SVID
//! path (`svid::certify`) with the entry's names and lifetime and the CSR's key. The
//! agent never sees the private key, and the caller renews by sending a new CSR.

use keyward_core::audit::Event;
use tonic::{Request, Status};

use super::KeyApi;
use super::csr;
use super::proto::{SignX509svidRequest, SignX509svidResponse};
use crate::daemon::caller::audit_caller;
use crate::daemon::svid;

/// The op's name in the audit log and metrics.
const OP: &str = "sign-x509-svid";

impl KeyApi {
    /// Checks the caller and its CSR, then issues and audits the SVID.
    pub(super) async fn sign_x509_svid(
        &self,
        req: Request<SignX509svidRequest>,
    ) -> Result<SignX509svidResponse, Status> {
        let snap = self.state.borrow().clone();
        let caller = self.gate.admit(&req, &snap).await?;
        if !snap.any_match(&caller.facts) {
            return Err(self.gate.no_entry(&caller));
        }
        let refuse = |reason, why: String| self.refuse(&caller, OP, None, reason, why);
        let asked = match csr::read(&req.get_ref().csr) {
            Ok(a) => a,
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                return Err(refuse("csr_asks_for_ca", s.message().to_string()));
            }
            Err(s) => {
                self.gate.metrics().key_op(OP, false);
                return Err(s);
            }
        };
        let Some(entry) = snap
            .matching(&caller.facts)
            .find(|e| e.spiffe_id == asked.spiffe_id)
        else {
            return Err(refuse(
                "csr_for_another_id",
                format!(
                    "the CSR asks for {}, which is not the SPIFFE ID of an entry for this caller",
                    asked.spiffe_id
                ),
            ));
        };
        if let Some(d) = asked.dns.iter().find(|d| !entry.dns.contains(d)) {
            return Err(refuse(
                "csr_name_not_granted",
                format!("the CSR asks for the DNS name {d}, which the entry does not have"),
            ));
        }
        if let Some(ip) = asked.ips.iter().find(|ip| !entry.ips.contains(ip)) {
            return Err(refuse(
                "csr_name_not_granted",
                format!("the CSR asks for the IP address {ip}, which the entry does not have"),
            ));
        }
        let ca = self.ca.view();
        let issued = svid::certify(&ca, entry, &asked.spki).await;
        self.gate.metrics().key_op(OP, issued.is_ok());
        let (cert, chain) = issued.map_err(|e| {
            let why = keyward_core::chain_line(&e);
            tracing::warn!(spiffe_id = %entry.spiffe_id, error = %why, "cannot issue an SVID for a caller's CSR");
            Status::unavailable(format!("cannot issue the SVID: {why}"))
        })?;
        self.gate.still_there(&caller)?;
        self.gate.audit().record(
            Event::issued(&entry.spiffe_id, &cert.der, ca.issuer.signer().uri())
                .caller(&audit_caller(&caller.facts))
                .with("op", OP),
        );
        Ok(SignX509svidResponse {
            spiffe_id: entry.spiffe_id.clone(),
            x509_svid: chain,
            bundle: snap.bundle.clone(),
        })
    }
}
