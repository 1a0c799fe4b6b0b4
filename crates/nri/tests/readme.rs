//! The README's plugin example is `examples/greeter.rs`, which `cargo test --all-targets`
//! compiles: the two must not drift apart.

#[test]
fn readme_example_is_the_compiled_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/greeter.rs");
    let start = readme.find("```rust\n").expect("README has a rust block") + "```rust\n".len();
    let len = readme[start..].find("```").expect("rust block ends");
    assert_eq!(
        &readme[start..start + len],
        example,
        "README.md's example differs from examples/greeter.rs"
    );
}
