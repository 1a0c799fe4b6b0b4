fn main() { println!("vdbi"); }
