//! {{name}}: a verge component. `./build.sh` builds {{name}}.wasm, `./test.sh`
//! runs it on the device host. The contract is wit/ (world `component`).

use verge_sdk::{Error, Handler, Outcome, Request, json_string, settings};

struct App;

impl Handler for App {
    fn handle(req: Request) -> Result<Outcome, Error> {
        let text = req.text()?.trim().to_string();
        if text.is_empty() {
            return Err(Error::invalid("send some text"));
        }
        let greeting: String = settings::get_or("greeting", "hello".to_string())?;
        let message = format!("{greeting}, {text}");
        Ok(Outcome::json(
            200,
            format!(
                "{{\"message\":{},\"chars\":{}}}",
                json_string(&message),
                text.chars().count()
            ),
        ))
    }
}

verge_sdk::export!(App);
