//! Command-line arguments.

use chat_transport_tcp::client::Trust;

pub const USAGE: &str = "\
chat-cli: a terminal client for the chat engine's TLS TCP transport

USAGE: chat-cli [OPTIONS]

OPTIONS:
  --addr HOST:PORT      server address (default 127.0.0.1:7443)
  --server-name NAME    name to check the certificate against with --ca
                        (default: the host of --addr)
  --ca FILE             trust certificates from this PEM file
  --fingerprint HEX     trust exactly the certificate with this SHA-256
  --insecure            trust any certificate (encrypts, no authentication)
  --user NAME           user name (prompted for when absent)
  --password PW         password (else env CHAT_PASSWORD, else prompted for)
  --signup              create the account first
  -h, --help            show this help";

pub struct Args {
    pub addr: String,
    pub server_name: Option<String>,
    pub trust: Trust,
    pub user: Option<String>,
    pub password: Option<String>,
    pub signup: bool,
}

/// The arguments, or `None` when help was asked for.
pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut addr = "127.0.0.1:7443".to_owned();
    let (mut server_name, mut trust, mut user, mut password, mut signup) =
        (None, None, None, None, false);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let mut set_trust = |t: Trust| match trust.replace(t) {
            None => Ok(()),
            Some(_) => Err("give only one of --ca, --fingerprint, --insecure".to_owned()),
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => addr = value("--addr")?,
            "--server-name" => server_name = Some(value("--server-name")?),
            "--ca" => set_trust(Trust::CaFile(value("--ca")?.into()))?,
            "--fingerprint" => {
                let fp = value("--fingerprint")?
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                set_trust(Trust::Fingerprint(fp))?;
            }
            "--insecure" => set_trust(Trust::Insecure)?,
            "--user" => user = Some(value("--user")?),
            "--password" => password = Some(value("--password")?),
            "--signup" => signup = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let trust = trust.ok_or("give one of --ca FILE, --fingerprint HEX or --insecure")?;
    let password = password.or_else(|| std::env::var("CHAT_PASSWORD").ok());
    Ok(Some(Args {
        addr,
        server_name,
        trust,
        user,
        password,
        signup,
    }))
}
