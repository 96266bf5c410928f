//! The `stockade` binary: the command line over every driver this repository ships.

fn main() {
    stockade::main_with(stockade::drivers::register_all)
}
