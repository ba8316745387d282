//! Compiles `proto/marketplace.proto` into the gRPC client and server code the
//! roles use. protox parses the file in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/marketplace.proto");
    let descriptors = protox::compile(["proto/marketplace.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
