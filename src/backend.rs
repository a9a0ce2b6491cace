//! TEMPORARY placeholder until the monoio-http backend lands (being written now).
/// Placeholder.
pub async fn serve(_listener: monoio::net::TcpListener, _name: std::rc::Rc<str>) {}
/// Placeholder.
pub fn spawn(
    _l: Vec<(std::net::TcpListener, String)>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    Err(std::io::Error::other("backend not built yet"))
}
