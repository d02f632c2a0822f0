// Validate a .glb/.gltf with the Khronos glTF validator (npm `gltf-validator`) and print its JSON report.
//   npm install --prefix .tools/gltf gltf-validator@2.0.0-dev.3.10
//   NODE_PATH=.tools/gltf/node_modules node scripts/validate_gltf.js out.glb
const fs = require("fs");
const validator = require("gltf-validator");

const path = process.argv[2];
validator.validateBytes(new Uint8Array(fs.readFileSync(path)), { maxIssues: 100 })
  .then((report) => {
    console.log(JSON.stringify(report.issues, null, 1));
    process.exit(report.issues.numErrors > 0 ? 1 : 0);
  })
  .catch((err) => { console.error(`${path}: ${err}`); process.exit(2); });
