// Swagger UI over this server's OpenAPI document. The tab's API key fetches
// the document, and authorizes the document's X-API-Key scheme, so "Try it
// out" sends it; Swagger UI's Authorize dialog shows and changes it there.
"use strict";

function authorize() {
  const key = apiKey.get();
  const schemes = ui.specSelectors.securityDefinitions();
  if (!key || !schemes) {
    return;
  }
  schemes.forEach((scheme, name) => {
    const header = scheme.get("type") === "apiKey" && scheme.get("in") === "header";
    if (header && scheme.get("name").toLowerCase() === "x-api-key") {
      ui.preauthorizeApiKey(name, key);
    }
  });
}

const ui = SwaggerUIBundle({
  url: new URL("openapi.json", location.href).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The default sends the document to an outside validator for a badge.
  validatorUrl: null,
  requestInterceptor: (request) => {
    if (request.loadSpec) {
      Object.assign(request.headers, apiKey.headers());
    }
    return request;
  },
  onComplete: authorize,
});

apiKey.onChange(() => {
  ui.specActions.download();
  authorize();
});
