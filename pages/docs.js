// Swagger UI over this server's OpenAPI document. Every request the page
// makes (the document itself and "Try it out") carries the tab's API key,
// unless the user authorized with another credential in Swagger UI.
"use strict";

const ui = SwaggerUIBundle({
  url: new URL("openapi.json", location.href).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The default sends the document to an outside validator for a badge.
  validatorUrl: null,
  requestInterceptor: (request) => {
    const credentials = ["x-api-key", "authorization"];
    const named = Object.keys(request.headers).some((name) =>
      credentials.includes(name.toLowerCase()),
    );
    if (!named) {
      Object.assign(request.headers, apiKey.headers());
    }
    return request;
  },
});

apiKey.onChange(() => ui.specActions.download());
