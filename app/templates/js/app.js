// {{name}}: a verge component. `./build.sh` builds {{name}}.wasm, `./test.sh`
// runs it on the device host. The contract is wit/ (world `component`).
import { handle, invalid, json, settings } from "verge-sdk";

export const handler = handle((req) => {
  const text = req.text().trim();
  if (text === "") throw invalid("send some text");
  const greeting = settings.string("greeting", "hello");
  return json(200, { message: `${greeting}, ${text}`, chars: [...text].length });
});
