//! Compiles the SPIFFE Workload API proto, keyward's KeyService proto and Envoy's Secret Discovery Service protos
//! (vendored under proto/, see proto/README.md) with protox (no `protoc` needed) and
//! generates the tonic servers and clients into OUT_DIR (all with the codec of
//! daemon/grpc_codec.rs); and links the `keyward` binary
//! with packed relative relocations (see [`link_relocations_packed`]) and, in release
//! builds, its functions in the order the agent runs them (see [`link_text_order`]).

/// The codec every generated service and client uses (daemon/grpc_codec.rs).
const GRPC_CODEC: &str = "crate::daemon::grpc_codec::SmallBuffers";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    link_relocations_packed();
    link_text_order();
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let fds = protox::compile(["workload.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .codec_path(GRPC_CODEC)
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

/// Release builds place the functions the agent runs next to each other, in the order
/// `link/text-order.txt` lists them (`scripts/text-order.sh` writes it): the Workload
/// API's serving path, then the rest of what the agent runs at start and under load. Of
/// the binary's 16 MB of code the agent runs about 2 MB, but the kernel maps code in
/// blocks around each page it runs (large page-cache folios, 36 kB on average here, and
/// fault-around), so with those functions scattered most of the text became resident:
/// 13.2-13.9 MB instead of 19.1-19.9 MB of agent RSS at 1,000 workloads after the load
/// (README, issue 19). The list names symbols; names no longer in the binary are skipped
/// and functions not listed follow the listed ones, so a stale list costs memory, never
/// correctness. The option is LLD's, rustc's default linker for x86_64-unknown-linux-gnu
/// since Rust 1.90; a build that picks its own linker through RUSTFLAGS goes without it.
fn link_text_order() {
    let var = |name| std::env::var(name).unwrap_or_default();
    println!("cargo:rerun-if-changed=link/text-order.txt");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let own_linker = ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|flag| var("CARGO_ENCODED_RUSTFLAGS").contains(flag));
    if var("PROFILE") == "release"
        && !own_linker
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link/text-order.txt");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// keyward's own `keyward.v1.KeyService` (`keyward.v1.rs`, included by
/// daemon/keys/proto.rs).
fn compile_key_service() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/keyward");
    let fds = protox::compile(["keyward/v1/keys.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .codec_path(GRPC_CODEC)
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
        .codec_path(GRPC_CODEC)
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
