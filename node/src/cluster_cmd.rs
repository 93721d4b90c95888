//! `tollgate cluster …`: making the credentials the cluster plane needs.

use anyhow::Context;
use tollgate_cluster::auth::{keyring, tls};

use crate::cli::ClusterCommand;

pub fn run(cmd: &ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Secret => {
            println!("{}", keyring::generate());
            Ok(())
        }
        ClusterCommand::Certs {
            nodes,
            out,
            server_name,
        } => {
            let files = tls::make_pki(*nodes, out, server_name)
                .with_context(|| format!("cannot make certificates in {}", out.display()))?;
            println!("CA certificate:   {}", files.ca.display());
            println!(
                "CA key:           {} (keep it off the nodes: it signs new members)",
                files.ca_key.display()
            );
            for (i, (cert, key)) in files.nodes.iter().enumerate() {
                println!(
                    "node {}:           --cluster-tls-cert {} --cluster-tls-key {} --cluster-tls-ca {}",
                    i + 1,
                    cert.display(),
                    key.display(),
                    files.ca.display()
                );
            }
            Ok(())
        }
    }
}
