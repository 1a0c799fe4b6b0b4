fn main() {
    println!("vdbi");
}
