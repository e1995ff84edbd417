//! Mints a token for local experiments: `mint-token <private.pem> [user-uuid]`.

use std::{path::Path, time::Duration};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let key = args
        .next()
        .ok_or("usage: mint-token <private.pem> [user-uuid]")?;
    let user = match args.next() {
        Some(id) => id.parse()?,
        None => uuid::Uuid::new_v4(),
    };
    let signer = shop_auth::TokenSigner::from_pem_file(Path::new(&key), Duration::from_secs(3600))?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", signer.issue(user));
    }
    Ok(())
}
