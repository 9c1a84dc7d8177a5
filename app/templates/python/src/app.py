"""{{name}}: a verge component. `./build.sh` builds {{name}}.wasm, `./test.sh` runs it on the
device host. The contract is wit/ (world `component`)."""

from verge_sdk import handle, invalid, json, settings


def greet(req):
    text = req.text().strip()
    if not text:
        raise invalid("send some text")
    greeting = settings.string("greeting", "hello")
    return json(200, {"message": f"{greeting}, {text}", "chars": len(text)})


Handler = handle(greet)
