//! Compiles the SPIFFE Workload API proto, keyward's KeyService proto and Envoy's Secret Discovery Service protos
//! (vendored under proto/, see proto/README.md) with protox (no `protoc` needed) and
//! generates the tonic servers and clients into OUT_DIR; and links the `keyward` binary
//! with packed relative relocations (see [`link_relocations_packed`]).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    link_relocations_packed();
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
    compile_key_service()?;
    compile_envoy_sds()
}

/// The binary is position-independent (ASLR), so the loader relocates every pointer in
/// its read-only data at start. As RELA entries those are 1.4 MB that the loader reads
/// whole (resident in every agent); packed as RELR (`-z pack-relative-relocs`,
/// binutils 2.38, glibc 2.36) they are 17 kB. Measured in the agent with 1,000
/// workloads: 1.5 MB less resident memory (README, issue 19). A linker or C library
/// without RELR support leaves the relocations as they were (ld enables it only when
/// libc.so provides `GLIBC_ABI_DT_RELR`).
fn link_relocations_packed() {
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// keyward's own `keyward.v1.KeyService` (`keyward.v1.rs`, included by
/// daemon/keys/proto.rs).
fn compile_key_service() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/keyward");
    let fds = protox::compile(["keyward/v1/keys.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .bytes(".")
        // These carry a data key or a payload in plaintext: their Debug is written by
        // hand, without it (daemon/keys/proto.rs).
        .skip_debug([
            ".keyward.v1.GenerateDataKeyResponse",
            ".keyward.v1.DecryptDataKeyResponse",
            ".keyward.v1.EncryptRequest",
            ".keyward.v1.DecryptResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}

/// Envoy's SDS service and the messages it carries, as one module tree (`envoy.rs`,
/// included by daemon/sds/proto.rs).
fn compile_envoy_sds() -> Result<(), Box<dyn std::error::Error>> {
    for dir in ["envoy", "udpa", "xds", "validate", "google"] {
        println!("cargo:rerun-if-changed=proto/{dir}");
    }
    let fds = protox::compile(
        [
            "envoy/service/secret/v3/sds.proto",
            "envoy/extensions/transport_sockets/tls/v3/secret.proto",
            "envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .bytes(".")
        // Generated, not prost-types': an Any's value is then `Bytes`, so an encoded
        // secret shares the zeroized buffer of its key rather than a plain Vec.
        .compile_well_known_types(true)
        .include_file("envoy.rs")
        // A DataSource holds a private key, and an Any or a DiscoveryResponse encoded
        // ones: their Debug is written by hand, without them (daemon/sds/proto.rs).
        .skip_debug([
            ".envoy.config.core.v3.DataSource",
            ".envoy.service.discovery.v3.DiscoveryResponse",
            ".google.protobuf.Any",
        ])
        .compile_fds(fds)?;
    Ok(())
}
