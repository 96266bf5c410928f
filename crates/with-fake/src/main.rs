//! `stockade-with-fake`: the `stockade` binary with one more driver. Adding a driver to the
//! product is the same one line in `stockade::drivers::register_all`.

fn register(registry: &mut stockade_core::Registry) {
    stockade::drivers::register_all(registry);
    stockade_fake::register(registry);
}

fn main() {
    stockade::main_with(register)
}
