fn main() -> std::process::ExitCode {
    tollgate_lab::cli::main()
}
