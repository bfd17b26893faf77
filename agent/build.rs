//! Compiles the SPIFFE Workload API proto with protox (no `protoc` needed) and
//! generates the tonic server and client into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let fds = protox::compile(["workload.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .bytes(".")
        // X509SVID carries a private key, JWTSVID and ValidateJWTSVIDRequest a bearer
        // token: their Debug is written by hand, without it (workload_api.rs).
        .skip_debug([".X509SVID", ".JWTSVID", ".ValidateJWTSVIDRequest"])
        .compile_fds(fds)?;
    Ok(())
}
